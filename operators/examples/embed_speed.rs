use std::time::Instant;
use operators::embed::{Embedder, LocalEmbedder};
fn main() {
    let bs: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(32);
    let e = LocalEmbedder::load(std::path::Path::new("models/all-MiniLM-L6-v2"), bs).unwrap();
    let data: serde_json::Value = serde_json::from_str(&std::fs::read_to_string("../shared/data/locomo/locomo10.json").unwrap()).unwrap();
    let mut texts = vec![];
    for t in data[0]["conversation"]["session_1"].as_array().unwrap().iter().chain(data[0]["conversation"]["session_2"].as_array().unwrap()) {
        texts.push(format!("[1:56 pm on 8 May, 2023] {}: {}", t["speaker"].as_str().unwrap(), t["text"].as_str().unwrap()));
    }
    let n = texts.len();
    e.embed(&texts[..4].to_vec()).unwrap();
    let t = Instant::now();
    e.embed(&texts).unwrap();
    let t = Instant::now();
    e.embed(&texts).unwrap();
    println!("{n} in {:?} = {:.1}/s", t.elapsed(), n as f64 / t.elapsed().as_secs_f64());
}
