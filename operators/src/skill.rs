//! Skills (MemOS `SkillMemory`, memos-spec §2.7): procedures an agent can reuse, uploaded with
//! `is_upload_skill` (or as knowledge-base files of type `skill`). A skill arrives as
//!
//! - a package: a zip holding a `SKILL.md` (the Agent Skills layout — YAML front matter with
//!   `name` and `description`, then the procedure in Markdown) and its resources (scripts,
//!   references), which are listed, not stored;
//! - a `SKILL.md` (or any Markdown/text) file part;
//! - the text of a message: its first line (a heading or sentence) names it, the rest is the
//!   procedure.
//!
//! Only `SKILL.md` is read out of a package, and only when its declared size is under
//! [`MAX_SKILL_MD`]: a package is never inflated whole.

use std::io::{Cursor, Read};

use crate::error::{OperatorError, Result};

/// Largest `SKILL.md` read from a package.
pub const MAX_SKILL_MD: u64 = 1 << 20;

/// A parsed skill.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Skill {
    /// Name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// How to do it.
    pub procedure: String,
    /// The package's other files (scripts, references), by path.
    pub files: Vec<String>,
}

impl Skill {
    /// The memory text: name, description, procedure.
    pub fn memory(&self) -> String {
        let mut m = self.name.clone();
        if !self.description.is_empty() {
            m.push_str(": ");
            m.push_str(&self.description);
        }
        if !self.procedure.is_empty() {
            m.push_str("\n\n");
            m.push_str(&self.procedure);
        }
        m
    }
}

fn bad(what: &str, why: impl std::fmt::Display) -> OperatorError {
    OperatorError::Invalid(format!("skill {what}: {why}"))
}

/// `key: value` lines of a front matter block (quotes stripped); other YAML is ignored.
fn front_matter(block: &str) -> Vec<(String, String)> {
    block
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            if k.starts_with(char::is_whitespace) {
                return None;
            }
            let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
            Some((k.trim().to_string(), v))
        })
        .collect()
}

/// A `SKILL.md` or any skill text. Without front matter, the first non-empty line (a Markdown
/// heading's text, or the first sentence) is the name and the rest the procedure.
pub fn from_markdown(text: &str, fallback_name: &str) -> Result<Skill> {
    let text = text.trim_start_matches('\u{feff}');
    let mut skill = Skill::default();
    let body = match text.strip_prefix("---") {
        Some(rest) => {
            let (block, body) = rest
                .split_once("\n---")
                .ok_or_else(|| bad(fallback_name, "front matter without its closing ---"))?;
            for (k, v) in front_matter(block) {
                match k.as_str() {
                    "name" => skill.name = v,
                    "description" => skill.description = v,
                    _ => {}
                }
            }
            body.trim_start_matches('-').trim().to_string()
        }
        None => text.trim().to_string(),
    };
    if skill.name.is_empty() {
        let first = body.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let name = first.trim().trim_start_matches('#').trim();
        skill.name = if name.is_empty() {
            fallback_name.to_string()
        } else {
            name.chars().take(120).collect()
        };
        skill.procedure = body
            .lines()
            .skip_while(|l| l.trim().is_empty())
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n")
            .trim()
            .to_string();
    } else {
        skill.procedure = body;
    }
    if skill.name.trim().is_empty() {
        return Err(bad(fallback_name, "no name"));
    }
    Ok(skill)
}

/// A skill package (zip): its `SKILL.md` (at the root or in one top folder) and the list of
/// its other files.
pub fn from_package(bytes: &[u8], filename: &str) -> Result<Skill> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| bad(filename, format!("not a zip package: {e}")))?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok())
        .map(|n| n.to_string())
        .collect();
    let depth = |n: &str| n.matches('/').count();
    let md = names
        .iter()
        .filter(|n| {
            let base = n.rsplit('/').next().unwrap_or(n);
            base.eq_ignore_ascii_case("skill.md") && depth(n) <= 1
        })
        .min_by_key(|n| depth(n))
        .ok_or_else(|| bad(filename, "the package has no SKILL.md"))?
        .clone();
    let f = zip
        .by_name(&md)
        .map_err(|e| bad(filename, format!("{md}: {e}")))?;
    if f.size() > MAX_SKILL_MD {
        return Err(bad(
            filename,
            format!("{md} is larger than {MAX_SKILL_MD} bytes"),
        ));
    }
    let mut text = String::new();
    f.take(MAX_SKILL_MD)
        .read_to_string(&mut text)
        .map_err(|e| bad(filename, format!("{md}: {e}")))?;
    let stem = filename.trim_end_matches(".zip");
    let mut skill = from_markdown(&text, stem)?;
    skill.files = names
        .into_iter()
        .filter(|n| *n != md && !n.ends_with('/'))
        .collect();
    Ok(skill)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(files: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = zip::ZipWriter::new(Cursor::new(&mut out));
            for (name, body) in files {
                w.start_file(*name, zip::write::SimpleFileOptions::default())
                    .unwrap();
                std::io::Write::write_all(&mut w, body.as_bytes()).unwrap();
            }
            w.finish().unwrap();
        }
        out
    }

    #[test]
    fn packages_markdown_and_plain_text_skills() {
        let md = "---\nname: release-notes\ndescription: \"Write release notes from merged PRs\"\n---\n\n# Steps\n1. List merged PRs.\n2. Group by label.";
        let zip = package(&[
            ("release-notes/SKILL.md", md),
            ("release-notes/scripts/list_prs.sh", "gh pr list"),
        ]);
        let s = from_package(&zip, "release-notes.zip").unwrap();
        assert_eq!(s.name, "release-notes");
        assert_eq!(s.description, "Write release notes from merged PRs");
        assert!(s.procedure.starts_with("# Steps") && s.procedure.contains("Group by label."));
        assert_eq!(s.files, ["release-notes/scripts/list_prs.sh"]);
        assert!(s.memory().starts_with("release-notes: Write release notes"));

        let t = from_markdown(
            "# Brew oolong\nRinse the leaves.\nSteep 3 minutes at 90 C.",
            "x",
        )
        .unwrap();
        assert_eq!(t.name, "Brew oolong");
        assert_eq!(t.procedure, "Rinse the leaves.\nSteep 3 minutes at 90 C.");

        let e = from_package(&package(&[("notes.txt", "no skill here")]), "p.zip").unwrap_err();
        assert!(e.to_string().contains("no SKILL.md"), "{e}");
        assert!(from_package(b"not a zip", "p.zip").is_err());
        assert!(from_markdown("---\nname: x\nno closing", "f").is_err());
    }
}
