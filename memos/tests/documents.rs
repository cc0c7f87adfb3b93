//! Hostile documents: a PDF decompression bomb and an HTML file nested thousands of elements
//! deep. Each gets a clear failure; the pipeline keeps ingesting other events within seconds,
//! and the server stays up (PDF and HTML are parsed in a `memos parse-document` worker with an
//! address-space limit and a deadline).

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Guard, free_port, memos, model_dir, wait_listening};
use serde_json::{Value, json};

/// A one-page PDF whose content stream inflates to `inflated` bytes of spaces.
fn pdf_bomb(inflated: usize) -> Vec<u8> {
    // Best compression: with flate2 on zlib-rs (which calamine/zip select), level 1 leaves 1 GiB
    // of spaces at ~10 MB; level 9 at ~1 MB.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![b' '; 1 << 20];
    for _ in 0..inflated / block.len() {
        z.write_all(&block).unwrap();
    }
    let stream = z.finish().unwrap();
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    let objects: Vec<Vec<u8>> =
        vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << >> >>"
            .to_vec(),
        {
            let mut o = format!("<< /Length {} /Filter /FlateDecode >>\nstream\n", stream.len())
                .into_bytes();
            o.extend_from_slice(&stream);
            o.extend_from_slice(b"\nendstream");
            o
        },
    ];
    for (i, body) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        pdf.extend_from_slice(body);
        pdf.extend_from_slice(b"\nendobj\n");
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        pdf.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}

fn post(url: &str, body: Value) -> (u16, Value, Duration) {
    let t = Instant::now();
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
        .post(url)
        .json(&body)
        .send()
        .expect("a response");
    let st = r.status().as_u16();
    (st, r.json().unwrap_or(Value::Null), t.elapsed())
}

#[test]
fn a_pdf_bomb_and_deeply_nested_html_fail_alone_and_ingestion_goes_on() {
    let model = model_dir();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = memos()
        .arg("serve")
        .env("MEMOS_DATA_DIR", data.path())
        .env("MEMOS_MODEL_DIR", &model)
        .env("MEMOS_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("MEMOS_PG_ADDR", "")
        .env("MEMOS_METRICS_ADDR", "")
        .env("MEMOS_WINDOW__DOCUMENTS__MEMORY_MB", "512")
        .env("MEMOS_WINDOW__DOCUMENTS__TIMEOUT_MS", "15000")
        .env("MEMOS_LIMITS__MAX_BODY_BYTES", "16777216")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Guard(child);
    assert!(wait_listening(port), "server did not start");
    let base = format!("http://127.0.0.1:{port}");
    let (st, kb, _) = post(
        &format!("{base}/product/knowledgebase"),
        json!({"name": "uploads"}),
    );
    assert_eq!(st, 200, "{kb}");
    let kb = kb["data"]["knowledgebase_id"].as_str().unwrap().to_string();

    // 1 GiB of spaces behind ~1 MB of deflate; fine.html below is the control the same worker
    // parses.
    let bomb = pdf_bomb(1 << 30);
    assert!(
        bomb.len() < 8 << 20,
        "the bomb is small on the wire: {}",
        bomb.len()
    );
    let deep = "<div>".repeat(20_000) + "deep text" + &"</div>".repeat(20_000);

    // An honest client adds memories the whole time; none of its adds may wait long.
    let url = format!("{base}/product/add");
    let honest = std::thread::spawn(move || {
        let mut slowest = Duration::ZERO;
        for i in 0..40 {
            let (st, b, took) = post(
                &url,
                json!({"user_id": "h", "writable_cube_ids": ["honest"], "async_mode": "sync",
                       "memory_content": format!("honest note {i}: the heron came back")}),
            );
            assert_eq!(st, 200, "{b}");
            slowest = slowest.max(took);
            std::thread::sleep(Duration::from_millis(100));
        }
        slowest
    });
    std::thread::sleep(Duration::from_millis(300));
    let (st, b, took) = post(
        &format!("{base}/product/knowledgebase/{kb}/files"),
        json!({"files": [
            {"file_name": "bomb.pdf", "data_base64": base64::engine::general_purpose::STANDARD.encode(&bomb)},
            {"file_name": "deep.html", "mime": "text/html", "content": deep},
            {"file_name": "fine.html", "mime": "text/html", "content": "<h1>Herons</h1><p>Herons nest in colonies.</p>"},
        ]}),
    );
    assert_eq!(st, 200, "{b}");
    let files = b["data"].as_array().unwrap();
    assert_eq!(files[0]["status"], "failed", "{b}");
    let e0 = files[0]["error"].as_str().unwrap();
    assert!(
        e0.contains("bomb.pdf") && e0.contains("memory limit"),
        "{e0}"
    );
    assert!(
        e0.contains("memory allocation"),
        "the worker's own words: {e0}"
    );
    assert_eq!(files[1]["status"], "failed", "{b}");
    let e1 = files[1]["error"].as_str().unwrap();
    assert!(e1.contains("20000 elements deep"), "{e1}");
    assert_eq!(files[2]["status"], "completed", "{b}");
    assert!(took < Duration::from_secs(20), "the uploads took {took:?}");
    let slowest = honest.join().unwrap();
    assert!(
        slowest < Duration::from_secs(10),
        "an honest add waited {slowest:?} behind the bad files"
    );
    // The server is up, and searches find the honest notes and the good file.
    let (st, b, _) = post(
        &format!("{base}/product/search"),
        json!({"user_id": "h", "readable_cube_ids": ["honest", kb], "query": "heron"}),
    );
    assert_eq!(st, 200, "{b}");
    let s = b.to_string();
    assert!(
        s.contains("honest note") && s.contains("Herons nest"),
        "{b}"
    );
}
