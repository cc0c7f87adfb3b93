//! Tokenisation for the lexical index: lowercase, split on anything that is not alphanumeric,
//! and index CJK scripts (which have no spaces) as overlapping character bigrams.

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF   // Hiragana, Katakana
        | 0x3400..=0x4DBF // CJK Extension A
        | 0x4E00..=0x9FFF // CJK Unified Ideographs
        | 0xAC00..=0xD7AF // Hangul syllables
        | 0xF900..=0xFAFF // CJK Compatibility Ideographs
        | 0x20000..=0x2FA1F)
}

/// Splits `text` into index terms.
///
/// Latin and other alphabetic scripts: maximal runs of alphanumerics, lowercased
/// ("Don't" → `don`, `t`). CJK: each run becomes its character bigrams ("机器学习" → `机器`,
/// `器学`, `学习`); a single CJK character stands alone.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut cjk: Vec<char> = Vec::new();
    let flush_cjk = |cjk: &mut Vec<char>, out: &mut Vec<String>| {
        match cjk.len() {
            0 => {}
            1 => out.push(cjk[0].to_string()),
            _ => {
                for w in cjk.windows(2) {
                    out.push(w.iter().collect());
                }
            }
        }
        cjk.clear();
    };
    for c in text.chars() {
        if is_cjk(c) {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            cjk.push(c);
        } else if c.is_alphanumeric() {
            flush_cjk(&mut cjk, &mut out);
            word.extend(c.to_lowercase());
        } else {
            flush_cjk(&mut cjk, &mut out);
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
        }
    }
    flush_cjk(&mut cjk, &mut out);
    if !word.is_empty() {
        out.push(word);
    }
    // A term is a key component; keep it bounded.
    out.retain(|t| t.len() <= 128);
    out
}

#[cfg(test)]
mod tests {
    use super::tokenize;

    #[test]
    fn latin_and_cjk() {
        assert_eq!(
            tokenize("Don't STOP, café-au-lait 42!"),
            ["don", "t", "stop", "café", "au", "lait", "42"]
        );
        assert_eq!(
            tokenize("我喜欢机器学习"),
            ["我喜", "喜欢", "欢机", "机器", "器学", "学习"]
        );
        assert_eq!(tokenize("AI与人"), ["ai", "与人"]);
        assert_eq!(tokenize("猫 dog"), ["猫", "dog"]);
    }
}
