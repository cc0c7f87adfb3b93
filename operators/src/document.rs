//! Documents: text extraction (plain text, Markdown, HTML, PDF; office and data files in
//! [`office`]) and structure-aware chunking.
//!
//! A document becomes sections (a heading path and its text): Markdown by its `#` headings,
//! HTML by `<h1>`…`<h6>` (rendered to text with `html2text`, which marks headings with `#`),
//! PDF by page text (`pdf-extract`), plain text as one section. Each section is cut into chunks
//! of at most `chunk_chars` characters on paragraph/sentence boundaries with `chunk_overlap`
//! characters carried over; a chunk starts with its heading path so it is found by it.

pub mod office;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::{OperatorError, Result};

/// A document format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain text.
    Text,
    /// Markdown.
    Markdown,
    /// HTML.
    Html,
    /// PDF.
    Pdf,
    /// Word (DOCX).
    Docx,
    /// PowerPoint (PPTX).
    Pptx,
    /// A spreadsheet (XLSX, XLS, ODS).
    Spreadsheet,
    /// CSV.
    Csv,
    /// JSON.
    Json,
}

impl Format {
    /// The MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            Format::Text => "text/plain",
            Format::Markdown => "text/markdown",
            Format::Html => "text/html",
            Format::Pdf => "application/pdf",
            Format::Docx => {
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            }
            Format::Pptx => {
                "application/vnd.openxmlformats-officedocument.presentationml.presentation"
            }
            Format::Spreadsheet => {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            }
            Format::Csv => "text/csv",
            Format::Json => "application/json",
        }
    }
}

/// Picks the format from the MIME type, else the file name, else the content.
pub fn detect(mime: Option<&str>, filename: &str, bytes: &[u8]) -> Format {
    let mime = mime.unwrap_or("").to_ascii_lowercase();
    let name = filename.to_ascii_lowercase();
    let ext = |e: &[&str]| e.iter().any(|e| name.ends_with(e));
    if mime.contains("pdf") || ext(&[".pdf"]) || bytes.starts_with(b"%PDF-") {
        Format::Pdf
    } else if mime.contains("wordprocessingml") || ext(&[".docx"]) {
        Format::Docx
    } else if mime.contains("presentationml") || ext(&[".pptx"]) {
        Format::Pptx
    } else if mime.contains("spreadsheetml")
        || mime.contains("ms-excel")
        || mime.contains("opendocument.spreadsheet")
        || ext(&[".xlsx", ".xlsm", ".xls", ".ods"])
    {
        Format::Spreadsheet
    } else if mime.contains("csv") || ext(&[".csv", ".tsv"]) {
        Format::Csv
    } else if mime.contains("json") || ext(&[".json"]) {
        Format::Json
    } else if mime.contains("html") || ext(&[".html", ".htm"]) {
        Format::Html
    } else if mime.contains("markdown") || ext(&[".md", ".markdown"]) {
        Format::Markdown
    } else {
        match office::zip_kind(bytes) {
            Some("docx") => return Format::Docx,
            Some("pptx") => return Format::Pptx,
            Some(_) => return Format::Spreadsheet,
            None => {}
        }
        // An old Excel file (OLE compound document).
        if bytes.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
            return Format::Spreadsheet;
        }
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).to_ascii_lowercase();
        if head.trim_start().starts_with("<!doctype html") || head.contains("<html") {
            Format::Html
        } else {
            Format::Text
        }
    }
}

/// A part of a document under one heading.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// Headings from the top, e.g. `["Install", "Linux"]`.
    pub path: Vec<String>,
    /// The text under it.
    pub text: String,
}

/// The bytes of a document payload: `text` (UTF-8) or `data_base64`.
pub fn payload_bytes(p: &serde_json::Value) -> Result<Vec<u8>> {
    if let Some(t) = p.get("text").and_then(|v| v.as_str()) {
        return Ok(t.as_bytes().to_vec());
    }
    if let Some(b) = p.get("data_base64").and_then(|v| v.as_str()) {
        return base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|e| OperatorError::Invalid(format!("data_base64: {e}")));
    }
    Err(OperatorError::Invalid(
        "a document event needs payload.text or payload.data_base64".into(),
    ))
}

/// Limits on parsing one document. A PDF can be a decompression bomb and an HTML file can nest
/// deeper than any stack: parsing runs in a worker process (`memos parse-document`) with an
/// address-space limit and a deadline, so one file can fail, but never stall or kill the
/// pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParseLimits {
    /// Longest a document may take to parse.
    pub timeout_ms: u64,
    /// Address space of the worker process, in MiB.
    pub memory_mb: u64,
    /// Deepest HTML element nesting accepted (checked before parsing).
    pub max_html_depth: usize,
    /// The `memos` executable that parses (`<worker> parse-document <format>`); empty = this
    /// process's executable when it is `memos`, else parsing on a thread of this process (with
    /// the deadline and the depth check, without the memory limit).
    pub worker: String,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            timeout_ms: 20_000,
            memory_mb: 1024,
            max_html_depth: 256,
            worker: String::new(),
        }
    }
}

impl Format {
    /// The name `parse-document` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Docx => "docx",
            Format::Pptx => "pptx",
            Format::Spreadsheet => "spreadsheet",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }

    /// The format of a name from [`Format::name`].
    pub fn from_name(s: &str) -> Option<Format> {
        Some(match s {
            "text" => Format::Text,
            "markdown" => Format::Markdown,
            "html" => Format::Html,
            "pdf" => Format::Pdf,
            "docx" => Format::Docx,
            "pptx" => Format::Pptx,
            "spreadsheet" => Format::Spreadsheet,
            "csv" => Format::Csv,
            "json" => Format::Json,
            _ => return None,
        })
    }
}

/// The deepest element nesting of an HTML text (a cheap scan: opening tags minus closing ones,
/// void and self-closing elements not counted).
pub fn html_depth(bytes: &[u8]) -> usize {
    const VOID: &[&[u8]] = &[
        b"area", b"base", b"br", b"col", b"embed", b"hr", b"img", b"input", b"link", b"meta",
        b"source", b"track", b"wbr",
    ];
    let (mut depth, mut max) = (0usize, 0usize);
    let mut i = 0;
    while let Some(off) = bytes[i..].iter().position(|&b| b == b'<') {
        let start = i + off + 1;
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'>')
            .map_or(bytes.len(), |e| start + e);
        let tag = &bytes[start..end];
        i = (end + 1).min(bytes.len());
        if let Some(rest) = tag.strip_prefix(b"/") {
            if !rest.is_empty() {
                depth = depth.saturating_sub(1);
            }
            continue;
        }
        let name: Vec<u8> = tag
            .iter()
            .take_while(|b| !b.is_ascii_whitespace() && **b != b'/')
            .map(u8::to_ascii_lowercase)
            .collect();
        if !name.first().is_some_and(u8::is_ascii_alphabetic)
            || tag.ends_with(b"/")
            || VOID.contains(&name.as_slice())
        {
            continue;
        }
        depth += 1;
        max = max.max(depth);
        if i >= bytes.len() {
            break;
        }
    }
    max
}

/// The sections of a document, parsed under `limits` (see [`ParseLimits`]).
pub fn parse(format: Format, bytes: &[u8], limits: &ParseLimits) -> Result<Vec<Section>> {
    if format == Format::Html {
        let depth = html_depth(bytes);
        if depth > limits.max_html_depth {
            return Err(OperatorError::Invalid(format!(
                "HTML nests {depth} elements deep; the limit is {} (window.documents.max_html_depth)",
                limits.max_html_depth
            )));
        }
    }
    if matches!(
        format,
        Format::Text | Format::Markdown | Format::Csv | Format::Json
    ) {
        // Linear-time parsers with no nesting: nothing to isolate.
        return sections(format, bytes);
    }
    match worker_exe(limits) {
        Some(exe) => parse_in_worker(&exe, format, bytes, limits),
        None => parse_on_thread(format, bytes, limits),
    }
}

fn worker_exe(limits: &ParseLimits) -> Option<std::path::PathBuf> {
    if !limits.worker.is_empty() {
        return Some(limits.worker.clone().into());
    }
    let me = std::env::current_exe().ok()?;
    (me.file_stem().and_then(|s| s.to_str()) == Some("memos")).then_some(me)
}

fn parse_on_thread(format: Format, bytes: &[u8], limits: &ParseLimits) -> Result<Vec<Section>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = bytes.to_vec();
    std::thread::Builder::new()
        .name("memos-parse".into())
        .stack_size(64 << 20)
        .spawn(move || {
            let _ = tx.send(sections(format, &owned));
        })
        .map_err(|e| OperatorError::Invalid(format!("{}: no parser thread: {e}", format.mime())))?;
    rx.recv_timeout(std::time::Duration::from_millis(limits.timeout_ms))
        .unwrap_or_else(|_| {
            Err(OperatorError::Invalid(format!(
                "{} took longer than {} ms to parse (window.documents.timeout_ms)",
                format.mime(),
                limits.timeout_ms
            )))
        })
}

fn parse_in_worker(
    exe: &std::path::Path,
    format: Format,
    bytes: &[u8],
    limits: &ParseLimits,
) -> Result<Vec<Section>> {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let failed = |why: String| OperatorError::Invalid(format!("{}: {why}", format.mime()));
    let mut child = Command::new(exe)
        .arg("parse-document")
        .arg(format.name())
        .env("MEMOS_PARSE_MEMORY_MB", limits.memory_mb.to_string())
        .env("MEMOS_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("the parser {} did not start: {e}", exe.display())))?;
    let mut stdin = child.stdin.take();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(w) = stdin.as_mut() {
            let _ = w.write_all(&input);
        }
    });
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(r) = stdout.as_mut() {
            let _ = r.read_to_end(&mut out);
        }
        out
    });
    let mut stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(r) = stderr.as_mut() {
            let _ = r.take(64 << 10).read_to_end(&mut out);
        }
        out
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(limits.timeout_ms);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "took longer than {} ms to parse (window.documents.timeout_ms); stopped",
                    limits.timeout_ms
                )));
            }
            Err(e) => return Err(failed(format!("waiting for the parser: {e}"))),
        }
    };
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    let mut lines = stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    // Exit 2: the reason is the worker's one line; a crash: its first line ("memory allocation
    // of … failed", "thread … panicked at …").
    let err = if status.code() == Some(2) {
        lines.next_back()
    } else {
        lines.next()
    }
    .unwrap_or("")
    .to_string();
    if !status.success() {
        return Err(match status.code() {
            Some(2) if !err.is_empty() => failed(err),
            _ => failed(format!(
                "the parser failed ({status}; memory limit {} MiB, window.documents.memory_mb){}",
                limits.memory_mb,
                if err.is_empty() {
                    String::new()
                } else {
                    format!(": {err}")
                }
            )),
        });
    }
    let parsed: Vec<(Vec<String>, String)> =
        serde_json::from_slice(&out).map_err(|e| failed(format!("the parser's output: {e}")))?;
    Ok(parsed
        .into_iter()
        .map(|(path, text)| Section { path, text })
        .collect())
}

/// What `memos parse-document` writes: the sections as `[[path, text], …]` JSON.
pub fn sections_json(sections: &[Section]) -> String {
    let v: Vec<(&Vec<String>, &String)> = sections.iter().map(|s| (&s.path, &s.text)).collect();
    serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
}

/// Extracts the sections of a document (in this thread, no limits: see [`parse`]).
pub fn sections(format: Format, bytes: &[u8]) -> Result<Vec<Section>> {
    let utf8 = || {
        std::str::from_utf8(bytes)
            .map(|s| s.to_string())
            .map_err(|_| OperatorError::Invalid(format!("{} document is not UTF-8", format.mime())))
    };
    Ok(match format {
        Format::Text => vec![Section {
            path: vec![],
            text: utf8()?,
        }],
        Format::Markdown => markdown_sections(&utf8()?),
        Format::Docx => markdown_sections(&office::docx_text(bytes)?),
        Format::Pptx => office::pptx_sections(bytes)?,
        Format::Spreadsheet => office::spreadsheet_sections(bytes)?,
        Format::Csv => vec![Section {
            path: vec![],
            text: office::csv_text(bytes)?,
        }],
        Format::Json => vec![Section {
            path: vec![],
            text: office::json_text(bytes)?,
        }],
        Format::Html => {
            let text = html2text::from_read(bytes, 10_000)
                .map_err(|e| OperatorError::Invalid(format!("HTML: {e}")))?;
            markdown_sections(&text)
        }
        Format::Pdf => {
            // pdf-extract panics on some malformed files: contain it as a bad input.
            let pages =
                std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem_by_pages(bytes))
                    .map_err(|_| {
                        OperatorError::Invalid("PDF: the file could not be parsed".into())
                    })?
                    .map_err(|e| OperatorError::Invalid(format!("PDF: {e}")))?;
            pages
                .iter()
                .enumerate()
                .filter(|(_, t)| !t.trim().is_empty())
                .map(|(i, t)| Section {
                    path: vec![format!("page {}", i + 1)],
                    text: t.trim().to_string(),
                })
                .collect()
        }
    })
}

/// Splits Markdown-like text on `#` headings, tracking the heading path.
pub fn markdown_sections(text: &str) -> Vec<Section> {
    let mut out = Vec::new();
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut cur = String::new();
    let mut in_code = false;
    let flush = |out: &mut Vec<Section>, path: &[(usize, String)], cur: &mut String| {
        if !cur.trim().is_empty() {
            out.push(Section {
                path: path.iter().map(|(_, h)| h.clone()).collect(),
                text: cur.trim().to_string(),
            });
        }
        cur.clear();
    };
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        let t = line.trim_start();
        let level = t.chars().take_while(|c| *c == '#').count();
        if !in_code && (1..=6).contains(&level) && t[level..].starts_with(' ') {
            flush(&mut out, &path, &mut cur);
            let title = t[level..].trim().trim_end_matches('#').trim().to_string();
            path.retain(|(l, _)| *l < level);
            path.push((level, title));
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    flush(&mut out, &path, &mut cur);
    out
}

/// A chunk: its text (heading path first) and the section it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Text to store and embed.
    pub text: String,
    /// Heading path, joined with " > ".
    pub section: String,
}

/// Chunks sections by size with overlap; chunks never span two sections.
pub fn chunk_sections(sections: &[Section], size: usize, overlap: usize) -> Vec<Chunk> {
    let mut out = Vec::new();
    for s in sections {
        let section = s.path.join(" > ");
        for c in chunk(&s.text, size, overlap) {
            let text = if section.is_empty() {
                c
            } else {
                format!("{section}\n{c}")
            };
            out.push(Chunk {
                text,
                section: section.clone(),
            });
        }
    }
    out
}

/// Splits text into chunks of at most `size` characters on paragraph/sentence boundaries where
/// possible, with `overlap` characters carried over.
pub fn chunk(text: &str, size: usize, overlap: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = size.max(1);
    if chars.len() <= size {
        return if text.trim().is_empty() {
            vec![]
        } else {
            vec![text.trim().to_string()]
        };
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        let mut end = (start + size).min(chars.len());
        if end < chars.len() {
            // Back off to the last paragraph or sentence break in the second half.
            let window: String = chars[start + size / 2..end].iter().collect();
            if let Some(pos) = window.rfind("\n\n").or_else(|| window.rfind(". ")) {
                end = start + size / 2 + window[..pos].chars().count() + 1;
            }
        }
        let piece: String = chars[start..end].iter().collect();
        if !piece.trim().is_empty() {
            out.push(piece.trim().to_string());
        }
        if end >= chars.len() {
            break;
        }
        start = end.saturating_sub(overlap).max(start + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_depth_counts_nesting_not_void_elements() {
        assert_eq!(
            html_depth(b"<html><body><p>a<br>b</p><img src=x/></body></html>"),
            3
        );
        let deep = "<table><tr><td>".repeat(200) + &"</td></tr></table>".repeat(200);
        assert_eq!(html_depth(deep.as_bytes()), 600);
        assert_eq!(html_depth(b"<!doctype html><!-- c --><div/>text"), 0);
        assert_eq!(html_depth(b"<<<<"), 0);
        let limits = ParseLimits::default();
        let e = parse(Format::Html, deep.as_bytes(), &limits).unwrap_err();
        assert!(e.to_string().contains("600 elements deep"), "{e}");
    }

    #[test]
    fn markdown_structure() {
        let md = "# Guide\nintro\n## Install\nrun it\n```\n# not a heading\n```\n## Use\ncall it\n# Other\nend";
        let s = markdown_sections(md);
        let paths: Vec<String> = s.iter().map(|s| s.path.join("/")).collect();
        assert_eq!(paths, ["Guide", "Guide/Install", "Guide/Use", "Other"]);
        assert!(s[1].text.contains("# not a heading"));
    }

    #[test]
    fn html_headings_become_sections() {
        let html = b"<html><head><style>p{}</style></head><body><h1>Trips</h1><p>Paris in May.</p><h2>Food</h2><p>Croissants &amp; coffee.</p></body></html>";
        assert_eq!(detect(None, "x", html), Format::Html);
        let s = sections(Format::Html, html).unwrap();
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[1].path, vec!["Trips".to_string(), "Food".to_string()]);
        assert!(s[1].text.contains("Croissants & coffee."));
    }

    #[test]
    fn chunks_stay_in_their_section_and_overlap() {
        let long = "Sentence number one is here. ".repeat(40);
        let secs = vec![
            Section {
                path: vec!["A".into()],
                text: long.clone(),
            },
            Section {
                path: vec!["B".into()],
                text: "short".into(),
            },
        ];
        let c = chunk_sections(&secs, 300, 60);
        assert!(c.len() > 3);
        assert!(c.iter().all(|c| c.text.chars().count() <= 302));
        assert_eq!(c.last().unwrap().text, "B\nshort");
        assert!(c[..c.len() - 1].iter().all(|c| c.section == "A"));
    }
}
