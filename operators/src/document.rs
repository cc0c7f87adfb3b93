//! Documents: text extraction (plain text, Markdown, HTML, PDF) and structure-aware chunking.
//!
//! A document becomes sections (a heading path and its text): Markdown by its `#` headings,
//! HTML by `<h1>`…`<h6>` (rendered to text with `html2text`, which marks headings with `#`),
//! PDF by page text (`pdf-extract`), plain text as one section. Each section is cut into chunks
//! of at most `chunk_chars` characters on paragraph/sentence boundaries with `chunk_overlap`
//! characters carried over; a chunk starts with its heading path so it is found by it.

use base64::Engine;

use crate::window::chunk;
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
}

impl Format {
    /// The MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            Format::Text => "text/plain",
            Format::Markdown => "text/markdown",
            Format::Html => "text/html",
            Format::Pdf => "application/pdf",
        }
    }
}

/// Picks the format from the MIME type, else the file name, else the content.
pub fn detect(mime: Option<&str>, filename: &str, bytes: &[u8]) -> Format {
    let mime = mime.unwrap_or("").to_ascii_lowercase();
    let name = filename.to_ascii_lowercase();
    if mime.contains("pdf") || name.ends_with(".pdf") || bytes.starts_with(b"%PDF-") {
        Format::Pdf
    } else if mime.contains("html") || name.ends_with(".html") || name.ends_with(".htm") {
        Format::Html
    } else if mime.contains("markdown") || name.ends_with(".md") || name.ends_with(".markdown") {
        Format::Markdown
    } else {
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

/// Extracts the sections of a document.
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

#[cfg(test)]
mod tests {
    use super::*;

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
