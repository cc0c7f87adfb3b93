//! Text out of office and data files, as Markdown-like text the document chunker splits at
//! its headings: DOCX (zip + WordprocessingML: paragraphs, `Heading N` / `Title` styles become
//! headings, table cells separated), PPTX (one section per slide, in slide order), spreadsheets
//! (XLSX, XLS, ODS through calamine: one section per sheet, each row as `header: value`
//! pairs), CSV (the same rows) and JSON (one `path: value` line per leaf). DOCX and PPTX are
//! read with zip and quick-xml: their text is a few elements of one or a few XML parts, which
//! needs no office library.

use std::io::{Cursor, Read};

use quick_xml::events::Event;

use super::Section;
use crate::error::{OperatorError, Result};

fn bad(what: &str, e: impl std::fmt::Display) -> OperatorError {
    OperatorError::Invalid(format!("{what}: {e}"))
}

/// The zip part `name` as text.
fn zip_part(zip: &mut zip::ZipArchive<Cursor<&[u8]>>, what: &str, name: &str) -> Result<String> {
    let mut f = zip
        .by_name(name)
        .map_err(|e| bad(what, format!("{name}: {e}")))?;
    let mut s = String::new();
    f.read_to_string(&mut s)
        .map_err(|e| bad(what, format!("{name}: {e}")))?;
    Ok(s)
}

fn open_zip<'a>(what: &str, bytes: &'a [u8]) -> Result<zip::ZipArchive<Cursor<&'a [u8]>>> {
    zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| bad(what, format!("not a zip container: {e}")))
}

/// What a zip container holds, by its main part: `docx`, `pptx`, `xlsx`, `ods` or None.
pub fn zip_kind(bytes: &[u8]) -> Option<&'static str> {
    if !bytes.starts_with(b"PK\x03\x04") {
        return None;
    }
    let zip = zip::ZipArchive::new(Cursor::new(bytes)).ok()?;
    let has = |n: &str| zip.file_names().filter_map(|f| f.ok()).any(|f| f == n);
    if has("word/document.xml") {
        Some("docx")
    } else if has("ppt/presentation.xml") {
        Some("pptx")
    } else if has("xl/workbook.xml") {
        Some("xlsx")
    } else if has("content.xml") && has("mimetype") {
        Some("ods")
    } else {
        None
    }
}

/// The text of one entity or character reference (`&amp;`, `&#x30;`).
fn reference(r: &quick_xml::events::BytesRef) -> String {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        return c.to_string();
    }
    match r.xml10_content().as_ref() {
        "lt" => "<",
        "gt" => ">",
        "amp" => "&",
        "quot" => "\"",
        "apos" => "'",
        _ => "",
    }
    .to_string()
}

/// Paragraph texts of a WordprocessingML or DrawingML part (paragraphs `p`, run texts `t`):
/// `(heading level, text)`, level 0 for body text. A table row (`tr`) is one line, its cells
/// (`tc`) separated by ` | `.
fn paragraphs(what: &str, xml: &str) -> Result<Vec<(usize, String)>> {
    let mut r = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    let (mut cur, mut level, mut in_text) = (String::new(), 0usize, false);
    let (mut row, mut cell, mut in_row): (Vec<String>, String, bool) =
        (vec![], String::new(), false);
    loop {
        match r.read_event().map_err(|e| bad(what, e))? {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                "t" => in_text = true,
                "tab" => cur.push('\t'),
                "br" | "cr" => cur.push('\n'),
                "tr" => in_row = true,
                "pStyle" => {
                    let v = e
                        .try_get_attribute("w:val")
                        .ok()
                        .flatten()
                        .map(|a| a.value.to_string())
                        .unwrap_or_default();
                    level = heading_level(&v);
                }
                _ => {}
            },
            Event::End(e) => match e.local_name().as_ref() {
                "t" => in_text = false,
                "p" if in_row => {
                    let t = cur.trim();
                    if !t.is_empty() {
                        if !cell.is_empty() {
                            cell.push(' ');
                        }
                        cell.push_str(t);
                    }
                    cur.clear();
                }
                "p" => {
                    let t = cur.trim().to_string();
                    if !t.is_empty() {
                        out.push((level, t));
                    }
                    cur.clear();
                    level = 0;
                }
                "tc" => row.push(std::mem::take(&mut cell)),
                "tr" => {
                    in_row = false;
                    let line = std::mem::take(&mut row).join(" | ");
                    if !line.replace('|', "").trim().is_empty() {
                        out.push((0, line));
                    }
                }
                _ => {}
            },
            Event::Text(t) if in_text => cur.push_str(&t.xml10_content()),
            Event::GeneralRef(g) if in_text => cur.push_str(&reference(&g)),
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

/// `Heading1`…`Heading9` (and `Title`) → 1…9; anything else 0.
fn heading_level(style: &str) -> usize {
    if style.eq_ignore_ascii_case("title") {
        return 1;
    }
    style
        .strip_prefix("Heading")
        .or_else(|| style.strip_prefix("heading"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .filter(|n| (1..=9).contains(n))
        .unwrap_or(0)
}

/// DOCX: the body as Markdown (headings from the paragraph styles).
pub fn docx_text(bytes: &[u8]) -> Result<String> {
    let mut zip = open_zip("DOCX", bytes)?;
    let xml = zip_part(&mut zip, "DOCX", "word/document.xml")?;
    let mut md = String::new();
    for (level, text) in paragraphs("DOCX", &xml)? {
        if level > 0 {
            md.push_str(&"#".repeat(level.min(6)));
            md.push(' ');
        }
        md.push_str(&text);
        md.push_str("\n\n");
    }
    Ok(md)
}

/// PPTX: one section per slide (`slide N`), slides in their number order.
pub fn pptx_sections(bytes: &[u8]) -> Result<Vec<Section>> {
    let mut zip = open_zip("PPTX", bytes)?;
    let mut slides: Vec<(usize, String)> = zip
        .file_names()
        .filter_map(|n| n.ok())
        .filter_map(|n| {
            let num = n.strip_prefix("ppt/slides/slide")?.strip_suffix(".xml")?;
            Some((num.parse().ok()?, n.to_string()))
        })
        .collect();
    slides.sort();
    let mut out = Vec::new();
    for (num, name) in slides {
        let xml = zip_part(&mut zip, "PPTX", &name)?;
        let text: Vec<String> = paragraphs("PPTX", &xml)?.into_iter().map(|p| p.1).collect();
        if !text.is_empty() {
            out.push(Section {
                path: vec![format!("slide {num}")],
                text: text.join("\n"),
            });
        }
    }
    Ok(out)
}

/// Rows as text: with a header row (the first row, when every cell of it is text), each row
/// is `header: value` pairs; otherwise its cells joined by ` | `. Empty rows are skipped.
fn rows_text(rows: &[Vec<String>]) -> String {
    let header = rows.first().filter(|h| {
        rows.len() > 1
            && h.iter()
                .all(|c| !c.trim().is_empty() && c.parse::<f64>().is_err())
    });
    let body = if header.is_some() { &rows[1..] } else { rows };
    let mut lines = Vec::new();
    for row in body {
        if row.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let line = match header {
            Some(h) => row
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.trim().is_empty())
                .map(|(i, c)| match h.get(i) {
                    Some(name) => format!("{}: {}", name.trim(), c.trim()),
                    None => c.trim().to_string(),
                })
                .collect::<Vec<_>>()
                .join(", "),
            None => row.iter().map(|c| c.trim()).collect::<Vec<_>>().join(" | "),
        };
        lines.push(line);
    }
    lines.join("\n")
}

/// XLSX, XLS, ODS: one section per non-empty sheet (its name).
pub fn spreadsheet_sections(bytes: &[u8]) -> Result<Vec<Section>> {
    use calamine::Reader;
    let mut wb = calamine::open_workbook_auto_from_rs(Cursor::new(bytes))
        .map_err(|e| bad("spreadsheet", e))?;
    let mut out = Vec::new();
    for name in wb.sheet_names() {
        let range = wb
            .worksheet_range(&name)
            .map_err(|e| bad("spreadsheet", format!("sheet {name}: {e}")))?;
        let rows: Vec<Vec<String>> = range
            .rows()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect();
        let text = rows_text(&rows);
        if !text.is_empty() {
            out.push(Section {
                path: vec![name.clone()],
                text,
            });
        }
    }
    Ok(out)
}

/// CSV (any delimiter of `,;\t|`, picked from the first line): the rows as text.
pub fn csv_text(bytes: &[u8]) -> Result<String> {
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let delimiter = [b',', b';', b'\t', b'|']
        .into_iter()
        .max_by_key(|d| first.iter().filter(|b| *b == d).count())
        .unwrap_or(b',');
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(bytes);
    let mut rows = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| bad("CSV", format!("row {}: {e}", i + 1)))?;
        rows.push(rec.iter().map(String::from).collect());
    }
    Ok(rows_text(&rows))
}

/// JSON: one `path: value` line per leaf (`a.b[2].c: text`), in document order.
pub fn json_text(bytes: &[u8]) -> Result<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad("JSON", e))?;
    let mut lines = Vec::new();
    // Iterative walk (no recursion depth limit to hit): (path, value) pairs.
    let mut stack = vec![(String::new(), &v)];
    while let Some((path, v)) = stack.pop() {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter().rev() {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    stack.push((p, x));
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate().rev() {
                    stack.push((format!("{path}[{i}]"), x));
                }
            }
            serde_json::Value::Null => {}
            serde_json::Value::String(s) => lines.push(format!("{path}: {s}")),
            other => lines.push(format!("{path}: {other}")),
        }
    }
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name);
        std::fs::read(p).unwrap()
    }

    #[test]
    fn docx_headings_paragraphs_and_table_rows() {
        let md = docx_text(&fixture("policy.docx")).unwrap();
        assert!(md.contains("# Travel policy\n"), "{md}");
        assert!(md.contains("## Hotels\n"), "{md}");
        assert!(
            md.contains("capped at 180 euros per night & include breakfast."),
            "{md}"
        );
        assert!(
            md.contains("City | Allowance") && md.contains("Lisbon | 150 euros per day"),
            "{md}"
        );
        let sections =
            crate::document::sections(crate::document::Format::Docx, &fixture("policy.docx"))
                .unwrap();
        assert!(
            sections
                .iter()
                .any(|s| s.path.last().is_some_and(|h| h == "Hotels")),
            "{sections:?}"
        );
    }

    #[test]
    fn pptx_slides_in_order_and_spreadsheet_sheets() {
        let slides = pptx_sections(&fixture("roadmap.pptx")).unwrap();
        assert_eq!(slides.len(), 2);
        assert_eq!(slides[0].path, ["slide 1"]);
        assert!(slides[0].text.contains("Roadmap 2025") && slides[0].text.contains("March"));
        assert!(
            slides[1]
                .text
                .contains("Two backend engineers join in April.")
        );
        let sheets = spreadsheet_sections(&fixture("budget.xlsx")).unwrap();
        assert_eq!(sheets[0].path, ["Budget"]);
        assert_eq!(
            sheets[0].text,
            "Team: Platform, Quarter: Q1, Budget: 42000\nTeam: Research, Quarter: Q2, Budget: 17500"
        );
        assert_eq!(sheets[1].text, "Team: Platform, Owner: Marta Silva");
    }

    #[test]
    fn formats_are_detected_from_the_bytes_alone() {
        use crate::document::{Format, detect};
        assert_eq!(detect(None, "file", &fixture("policy.docx")), Format::Docx);
        assert_eq!(detect(None, "file", &fixture("roadmap.pptx")), Format::Pptx);
        assert_eq!(
            detect(None, "file", &fixture("budget.xlsx")),
            Format::Spreadsheet
        );
        assert_eq!(detect(None, "file", b"plain words"), Format::Text);
        assert_eq!(detect(Some("text/csv"), "x", b"a,b"), Format::Csv);
        assert_eq!(detect(None, "data.json", b"{}"), Format::Json);
    }

    #[test]
    fn csv_json_and_broken_containers() {
        assert_eq!(
            csv_text(b"name\tage\nAna\t31\n\nBen\t40\n").unwrap(),
            "name: Ana, age: 31\nname: Ben, age: 40"
        );
        // No header row (numbers first): cells joined.
        assert_eq!(csv_text(b"1,2\n3,4\n").unwrap(), "1 | 2\n3 | 4");
        assert_eq!(
            json_text(br#"{"a": {"b": [1, "x", null]}, "c": true}"#).unwrap(),
            "a.b[0]: 1\na.b[1]: x\nc: true"
        );
        assert!(json_text(b"{not json").is_err());
        let e = docx_text(b"PK\x03\x04 truncated").unwrap_err().to_string();
        assert!(e.contains("DOCX"), "{e}");
        assert!(spreadsheet_sections(b"garbage").is_err());
        assert_eq!(heading_level("Heading3"), 3);
        assert_eq!(heading_level("Normal"), 0);
    }
}
