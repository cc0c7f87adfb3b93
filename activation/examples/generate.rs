//! Greedy generation with a GGUF model, with and without a cached memory prefix:
//! `cargo run --example generate -p activation -- MODEL.gguf "memory; memory" "question" [system]`.

use std::time::Instant;

use activation::lm::{chat_prefix, chat_suffix};
use activation::{DevicePref, LocalLm};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: generate MODEL.gguf \"memory; memory\" \"question\" [system]");
        std::process::exit(2);
    }
    let lm = LocalLm::load(std::path::Path::new(&args[1]), DevicePref::Auto)?;
    let memories: Vec<String> = args[2].split(';').map(|m| m.trim().to_string()).collect();
    let system = args
        .get(4)
        .map(String::as_str)
        .unwrap_or("You are a helpful assistant.");
    let prefix = lm.encode(&chat_prefix(system, &memories))?;
    let t = Instant::now();
    let cache = lm.prefill(&prefix)?;
    println!("prefill: {} tokens in {:?}", prefix.len(), t.elapsed());
    let q = lm.encode(&chat_suffix("", &[("user".into(), args[3].clone())]))?;
    let g = lm.generate(Some(&cache), &q, 64, |t| {
        use std::io::Write;
        print!("{t}");
        let _ = std::io::stdout().flush();
    })?;
    println!(
        "\n-- ttft {:?} with {} cached tokens",
        g.ttft, g.cached_tokens
    );
    Ok(())
}
