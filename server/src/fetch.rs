//! Documents by URL (MemOS `file_data` as an http(s) URL, or a message that is only a
//! document's URL): fetched on the request path, before the event exists, so a failure is the
//! request's 400 and the pipeline never waits on the network. The guard against server-side
//! request forgery: every address the host resolves to must be public (loopback, private,
//! link-local, shared, multicast and unspecified ranges are refused unless
//! `documents.allow_private_urls`), the connection goes to the address that was checked (no
//! second lookup to rebind), redirects are followed by hand and each hop is checked again, and
//! the body is cut at `documents.max_file_bytes` and `documents.fetch_timeout_ms`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::DocumentsConfig;
use crate::error::ServerError;

/// Most redirects followed.
const MAX_REDIRECTS: usize = 3;

/// Document extensions a bare URL in a message is taken for a document by.
const DOC_EXTENSIONS: &[&str] = &[
    ".pdf", ".docx", ".pptx", ".xlsx", ".xls", ".ods", ".csv", ".tsv", ".json", ".md", ".txt",
    ".html", ".htm",
];

/// Whether `ip` is an address a fetch may reach without `allow_private_urls`.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

fn bad(url: &str, why: impl std::fmt::Display) -> ServerError {
    ServerError::BadRequest(format!("file {url}: {why}"))
}

/// Resolves `url`'s host and checks every address; returns the one to connect to.
async fn checked_address(
    url: &reqwest::Url,
    cfg: &DocumentsConfig,
) -> Result<SocketAddr, ServerError> {
    let shown = url.as_str();
    let host = url
        .host_str()
        .ok_or_else(|| bad(shown, "the URL has no host"))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| bad(shown, "the URL has no port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| bad(shown, format!("cannot resolve {host}: {e}")))?
        .collect();
    let first = *addrs
        .first()
        .ok_or_else(|| bad(shown, format!("{host} has no address")))?;
    if !cfg.allow_private_urls
        && let Some(a) = addrs.iter().find(|a| !is_public(a.ip()))
    {
        return Err(bad(
            shown,
            format!(
                "{host} resolves to {}, a private or local address (documents.allow_private_urls is off)",
                a.ip()
            ),
        ));
    }
    Ok(first)
}

/// Fetches a document: (bytes, file name from the URL's path, MIME type from the response).
pub async fn fetch(
    url: &str,
    cfg: &DocumentsConfig,
) -> Result<(Vec<u8>, String, Option<String>), ServerError> {
    let mut current = reqwest::Url::parse(url).map_err(|e| bad(url, e))?;
    for _ in 0..=MAX_REDIRECTS {
        if !matches!(current.scheme(), "http" | "https") {
            return Err(bad(
                url,
                format!(
                    "scheme {} is not http or https (files on the server: doc_path under documents.doc_root)",
                    current.scheme()
                ),
            ));
        }
        let addr = checked_address(&current, cfg).await?;
        let host = current.host_str().unwrap_or_default().to_string();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(cfg.fetch_timeout_ms))
            .no_proxy()
            .resolve(&host, addr)
            .build()
            .map_err(|e| ServerError::Unavailable(format!("HTTP client: {e}")))?;
        let mut resp = client
            .get(current.clone())
            .send()
            .await
            .map_err(|e| bad(url, e))?;
        if resp.status().is_redirection() {
            let to = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| bad(url, "a redirect without Location"))?;
            current = current.join(to).map_err(|e| bad(url, e))?;
            continue;
        }
        if !resp.status().is_success() {
            return Err(bad(url, format!("the server answered {}", resp.status())));
        }
        let mime = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| bad(url, e))? {
            if (body.len() + chunk.len()) as u64 > cfg.max_file_bytes {
                return Err(ServerError::TooLarge(format!(
                    "file {url}: larger than {} bytes (documents.max_file_bytes)",
                    cfg.max_file_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let name = current
            .path_segments()
            .and_then(|mut s| s.next_back().map(String::from))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "document".into());
        return Ok((body, name, mime));
    }
    Err(bad(url, format!("more than {MAX_REDIRECTS} redirects")))
}

fn is_url(s: &str) -> bool {
    let s = s.trim();
    (s.starts_with("http://") || s.starts_with("https://")) && !s.contains(char::is_whitespace)
}

/// A `file_data` that names a location rather than holding content: http(s) (fetched) or
/// `file://` (refused by [`fetch`]: server files come through `doc_path`).
fn is_location(s: &str) -> bool {
    is_url(s) || s.trim().starts_with("file://")
}

/// A message whose whole content is one document URL (MemOS's docs add
/// `{"content": "https://…/file.docx"}`).
fn document_url(s: &str) -> bool {
    let lower = s.trim().to_ascii_lowercase();
    let path = lower.split(['?', '#']).next().unwrap_or("");
    is_url(s) && DOC_EXTENSIONS.iter().any(|e| path.ends_with(e))
}

/// The file parts to fetch in `messages`: pointers to each `file` object whose `file_data`
/// is a URL, and each message whose content is a document URL (turned into a file part).
fn collect(messages: &mut Value) -> Vec<&mut Value> {
    let mut out = Vec::new();
    let items: Vec<&mut Value> = match messages {
        Value::Array(a) => a.iter_mut().collect(),
        _ => return out,
    };
    for m in items {
        if m.get("content")
            .and_then(Value::as_str)
            .is_some_and(document_url)
        {
            let url = m["content"].as_str().unwrap_or_default().trim().to_string();
            m["content"] = json!([{"type": "file", "file": {"file_data": url}}]);
        }
        let parts: Vec<&mut Value> = if m.get("content").is_some() {
            match m.get_mut("content") {
                Some(Value::Array(p)) => p.iter_mut().collect(),
                _ => vec![],
            }
        } else {
            vec![m]
        };
        for p in parts {
            if p.get("type").and_then(Value::as_str) == Some("file")
                && p.pointer("/file/file_data")
                    .and_then(Value::as_str)
                    .is_some_and(is_location)
            {
                out.push(&mut p["file"]);
            }
        }
    }
    out
}

/// Fetches every document URL in `messages` and puts the bytes in its file part (base64
/// `data:` URL, the name and MIME type from the response when the part has none).
pub async fn resolve(messages: &mut Value, cfg: &DocumentsConfig) -> Result<(), ServerError> {
    for file in collect(messages) {
        let url = file["file_data"].as_str().unwrap_or_default().to_string();
        let (bytes, name, mime) = fetch(&url, cfg).await?;
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
        file["file_data"] = json!(format!("data:{};base64,{data}", mime.unwrap_or_default()));
        if file.get("filename").and_then(Value::as_str).is_none() {
            file["filename"] = json!(name);
        }
        if file.get("source_url").is_none() {
            file["source_url"] = json!(url);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_local_addresses_are_not_public() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a}");
        }
        for a in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn document_urls_in_messages_become_file_parts() {
        let mut m = json!([
            {"role": "user", "content": "https://example.org/files/report.docx?x=1"},
            {"role": "user", "content": "see https://example.org for more"},
            {"role": "user", "content": [{"type": "file", "file": {"file_data": "https://example.org/a"}},
                                         {"type": "file", "file": {"file_data": "plain text"}}]},
        ]);
        let n = collect(&mut m).len();
        assert_eq!(n, 2);
        assert_eq!(
            m[0]["content"][0]["file"]["file_data"],
            "https://example.org/files/report.docx?x=1"
        );
        assert_eq!(m[1]["content"], "see https://example.org for more");
    }
}
