//! The house rules ARCHITECTURE.md states, checked on the workspace itself: which crate may know
//! HTTP, one feature resolution for `cargo run` and `cargo test`, no import cycle between the
//! modules of a crate, no crate holding most of the code, one commit path, no function over 120
//! lines, no JSON values in the engine's public API.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(tests::root());
    c
}

fn metadata() -> Value {
    let out = cargo()
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A workspace crate: name, source folder, dependencies (name, kind).
type Crate = (String, PathBuf, Vec<(String, String)>);

/// Workspace crates with their source folder, except the test and benchmark harnesses.
fn library_crates(meta: &Value) -> Vec<Crate> {
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !["tests", "benches"].contains(&p["name"].as_str().unwrap()))
        .map(|p| {
            let dir = Path::new(p["manifest_path"].as_str().unwrap())
                .parent()
                .unwrap()
                .join("src");
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    (
                        d["name"].as_str().unwrap().to_string(),
                        d["kind"].as_str().unwrap_or("normal").to_string(),
                    )
                })
                .collect();
            (p["name"].as_str().unwrap().to_string(), dir, deps)
        })
        .collect()
}

#[test]
fn only_the_server_crate_knows_http_mcp_and_openapi() {
    let meta = metadata();
    let crates = library_crates(&meta);
    assert!(crates.len() >= 8, "{crates:?}");
    let mut knows = BTreeMap::new();
    for (name, _, deps) in &crates {
        for (dep, kind) in deps {
            if kind == "normal" && ["axum", "rmcp", "utoipa"].contains(&dep.as_str()) {
                knows
                    .entry(name.clone())
                    .or_insert_with(BTreeSet::new)
                    .insert(dep.clone());
            }
        }
    }
    assert_eq!(
        knows.keys().cloned().collect::<Vec<_>>(),
        ["server"],
        "{knows:?}"
    );
    // anyhow only in the binary crate.
    let anyhow: Vec<&String> = crates
        .iter()
        .filter(|(_, _, deps)| deps.iter().any(|(d, k)| d == "anyhow" && k == "normal"))
        .map(|(n, _, _)| n)
        .collect();
    assert_eq!(anyhow, ["memos"]);
}

fn features(args: &[&str]) -> HashMap<String, BTreeSet<String>> {
    let out = cargo()
        .args(["tree", "--offline", "--prefix", "none", "-f", "{p}|{f}"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut m: HashMap<String, BTreeSet<String>> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim_end_matches(" (*)");
        if let Some((pkg, f)) = line.split_once('|') {
            m.entry(pkg.to_string())
                .or_default()
                .extend(f.split(',').filter(|s| !s.is_empty()).map(String::from));
        }
    }
    m
}

/// `cargo run --bin memos` and `cargo test --workspace` resolve every shared dependency with
/// the same features, so the second reuses the first one's build (a feature that only tests
/// enable on a low crate such as libc would rebuild everything above it).
#[test]
fn cargo_run_and_cargo_test_share_one_feature_resolution() {
    let run = features(&["-p", "memos", "-e", "normal,build"]);
    let test = features(&["--workspace", "-e", "normal,build,dev"]);
    assert!(run.len() > 100, "{}", run.len());
    let differ: Vec<String> = run
        .iter()
        .filter_map(|(pkg, f)| {
            let t = test.get(pkg)?;
            (t != f).then(|| format!("{pkg}: tests add {:?}", t.difference(f).collect::<Vec<_>>()))
        })
        .collect();
    assert!(
        differ.is_empty(),
        "unify these in [workspace.dependencies]: {differ:#?}"
    );
}

/// The top-level modules of a crate (`src/x.rs` or `src/x/`) and the modules each names
/// through `crate::` (comments left out).
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in rust_files(src) {
        let rel = p.strip_prefix(src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let deps = g.entry(top.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    deps.insert(name);
                }
            }
        }
    }
    g
}

/// Modules that are on a cycle (Tarjan's strongly connected components larger than one).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        for w in &t.g[v] {
            let w = w.as_str();
            if !t.g.contains_key(w) {
                continue;
            }
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut c = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                c.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                c.sort();
                t.out.push(c);
            }
        }
    }
    let mut t = T {
        g,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    g.insert("d".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycles(&g), [["a", "b", "c"]]);
}

#[test]
fn no_import_cycle_between_the_modules_of_a_crate() {
    let meta = metadata();
    let mut found = Vec::new();
    for (name, src, _) in library_crates(&meta) {
        let g = module_graph(&src);
        assert!(
            !g.is_empty(),
            "{name}: no modules read in {}",
            src.display()
        );
        for c in cycles(&g) {
            found.push(format!("{name}: {}", c.join(" ↔ ")));
        }
    }
    assert!(found.is_empty(), "module cycles: {found:#?}");
}

fn rust_lines(dir: &Path) -> usize {
    rust_files(dir)
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .sum()
}

/// No crate holds more than ~35 % of the workspace's Rust (sources and tests).
#[test]
fn no_crate_holds_most_of_the_code() {
    let meta = metadata();
    let mut sizes = BTreeMap::new();
    for p in meta["packages"].as_array().unwrap() {
        let dir = Path::new(p["manifest_path"].as_str().unwrap())
            .parent()
            .unwrap()
            .to_path_buf();
        sizes.insert(p["name"].as_str().unwrap().to_string(), rust_lines(&dir));
    }
    let total: usize = sizes.values().sum();
    assert!(total > 20_000, "{sizes:?}");
    for (name, n) in &sizes {
        let share = *n as f64 / total as f64;
        assert!(
            share <= 0.35,
            "{name} holds {:.0} % of the code ({n} of {total} lines): {sizes:?}",
            share * 100.0
        );
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every write transaction above the store is opened by `pipelines::commit` (the one commit
/// path, where the hooks and the commit metric fire). The store opens its own only for its
/// maintenance (creating databases, folding vector changes).
#[test]
fn no_write_transaction_outside_the_commit_path() {
    let meta = metadata();
    let mut found = Vec::new();
    let mut scanned = 0;
    for (name, src, _) in library_crates(&meta) {
        if name == "store" {
            continue;
        }
        for f in rust_files(&src) {
            if f.ends_with("pipelines/src/commit.rs") {
                continue;
            }
            scanned += 1;
            let text = std::fs::read_to_string(&f).unwrap();
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if code.contains("write_txn(") || code.contains(".commit(wtxn") {
                    found.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(scanned > 50, "{scanned} files scanned");
    assert!(
        found.is_empty(),
        "write transactions outside the commit path: {found:#?}"
    );
}

/// `src` with comments, string and character literals blanked (newlines kept), so the braces
/// left are the code's own.
fn code_only(src: &str) -> Vec<u8> {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        let ident_before = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if rest.starts_with(b"//") {
            let end = rest
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            let (mut depth, mut j) = (0, i);
            while j < b.len() {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if !ident_before
            && (rest.starts_with(b"r#") || rest.starts_with(b"r\"") || rest.starts_with(b"br"))
            && rest
                .iter()
                .skip_while(|&&c| c == b'b' || c == b'r')
                .find(|&&c| c != b'#')
                == Some(&b'"')
        {
            let hashes = rest
                .iter()
                .skip_while(|&&c| c == b'b' || c == b'r')
                .take_while(|&&c| c == b'#')
                .count();
            let open = rest.iter().position(|&c| c == b'"').unwrap_or(0) + 1;
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            let end = b[i + open..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(b.len(), |p| i + open + p + close.len());
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if b[i] == b'\'' && rest.get(1) == Some(&b'\\') {
            let end = b[i + 2..]
                .iter()
                .position(|&c| c == b'\'')
                .map_or(b.len(), |p| i + 2 + p + 1);
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'\'' && rest.get(2) == Some(&b'\'') {
            blank(&mut out, i, i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

/// Every `fn` item with a body in `src`: (first line, name, lines from its head to its
/// closing brace).
fn functions(src: &str) -> Vec<(usize, String, usize)> {
    const QUALIFIERS: &[&str] = &["pub", "async", "const", "unsafe", "extern", "default"];
    let code = code_only(src);
    let text = String::from_utf8_lossy(&code).into_owned();
    let mut starts = vec![0];
    starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    let mut out = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let Some(at) = t.find("fn ") else { continue };
        let qualified = t[..at]
            .split_whitespace()
            .all(|w| QUALIFIERS.contains(&w) || w.starts_with("pub("));
        if !qualified || (at > 0 && !t[..at].ends_with(' ')) {
            continue;
        }
        let name: String = t[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let head = starts[ln] + (line.len() - t.len()) + at;
        let Some(open) = text[head..].find(['{', ';']).map(|p| head + p) else {
            continue;
        };
        if code[open] == b';' {
            continue;
        }
        let mut depth = 0usize;
        let mut end = open;
        for (j, &c) in code.iter().enumerate().skip(open) {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = j;
                        break;
                    }
                }
                _ => {}
            }
        }
        let last = text[..end].matches('\n').count();
        out.push((ln + 1, name, last - ln + 1));
    }
    out
}

#[test]
fn the_function_scanner_measures_bodies_not_strings_or_comments() {
    let src = "fn short() {\n    let s = \"}}}{\"; // }\n    let c = '{';\n}\n\n/// fn fake() {\npub(crate) async fn long(x: u32) -> u32 {\n    /* { */\n    let r = r#\"{\"#;\n    x\n}\ntrait T { fn decl(&self); }\n";
    let f = functions(src);
    assert_eq!(
        f,
        vec![(1, "short".to_string(), 4), (7, "long".to_string(), 5)],
        "{f:?}"
    );
}

/// No function anywhere in the workspace — sources, benchmarks and tests — is over 120 lines.
#[test]
fn no_function_over_120_lines() {
    let meta = metadata();
    let mut found = Vec::new();
    let mut counted = 0;
    for p in meta["packages"].as_array().unwrap() {
        let root = Path::new(p["manifest_path"].as_str().unwrap())
            .parent()
            .unwrap()
            .to_path_buf();
        for dir in ["src", "benches", "tests"] {
            for f in rust_files(&root.join(dir)) {
                let text = std::fs::read_to_string(&f).unwrap();
                for (line, name, n) in functions(&text) {
                    counted += 1;
                    if n > 120 {
                        found.push(format!("{}:{line}: {name} is {n} lines", f.display()));
                    }
                }
            }
        }
    }
    assert!(counted > 1000, "{counted} functions counted");
    assert!(found.is_empty(), "functions over 120 lines: {found:#?}");
}

/// The engine's public API carries typed values, not `serde_json::Value` (MemOS JSON shapes
/// belong to the server): no public item of `pipelines` names `Value`.
#[test]
fn no_json_value_in_the_engine_public_api() {
    let meta = metadata();
    let (_, src, _) = library_crates(&meta)
        .into_iter()
        .find(|(n, _, _)| n == "pipelines")
        .unwrap();
    let mut found = Vec::new();
    for f in rust_files(&src) {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim_start();
            let public = t.starts_with("pub ") && !t.starts_with("pub(");
            if public && t.contains("Value") {
                found.push(format!("{}:{}: {}", f.display(), i + 1, t));
            }
        }
    }
    assert!(
        found.is_empty(),
        "serde_json::Value in public items: {found:#?}"
    );
}
