//! Memory control over a real server: rule-based feedback (each form, before/after search,
//! archived versions and history), complete deletion asserted index by index, soft delete and
//! recover, `as_of` in system and event time, documents (PDF, HTML, Markdown generated here)
//! chunked and searched beside a user's cube, preference and tool memory, images, capacity
//! forgetting, and MemCube export → import → identical search results.

use serde_json::{Value, json};
use store::{MemoryType, Status};

async fn add(s: &tests::Server, cube: &str, messages: Value) -> Vec<Value> {
    let (st, b) = s
        .post(
            "/product/add",
            json!({"user_id": "u1", "writable_cube_ids": [cube], "async_mode": "sync", "messages": messages}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    b["data"].as_array().unwrap().clone()
}

async fn say(s: &tests::Server, cube: &str, text: &str) -> String {
    let added = add(s, cube, json!([{"role": "user", "content": text}])).await;
    added
        .iter()
        .find(|m| m["memory_type"] != "PreferenceMemory")
        .unwrap_or(&added[0])["memory_id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn feedback(s: &tests::Server, cube: &str, body: Value) -> Value {
    let mut b = json!({"user_id": "u1", "writable_cube_ids": [cube], "async_mode": "sync"});
    for (k, v) in body.as_object().unwrap() {
        b[k] = v.clone();
    }
    let (st, r) = s.post("/product/feedback", b).await;
    assert_eq!(st, 200, "{r}");
    r["data"][0]["record"].clone()
}

/// (id, memory) of a search's bucket, best first.
async fn search(s: &tests::Server, cube: &str, query: &str, extra: Value) -> Value {
    let mut b = json!({"user_id": "u1", "readable_cube_ids": [cube], "query": query, "top_k": 5});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    let (st, r) = s.post("/product/search", b).await;
    assert_eq!(st, 200, "{r}");
    r["data"].clone()
}

fn texts(data: &Value, bucket: &str) -> Vec<String> {
    data[bucket]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["memories"].as_array().unwrap().iter())
        .map(|m| m["memory"].as_str().unwrap().to_string())
        .collect()
}

fn ids(data: &Value, bucket: &str) -> Vec<String> {
    data[bucket]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["memories"].as_array().unwrap().iter())
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

async fn get(s: &tests::Server, id: &str, query: &str) -> (u16, Value) {
    let (st, b) = s.get(&format!("/product/get_memory/{id}{query}")).await;
    (st, b["data"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_rules_correct_without_destroying() {
    let dir = tempfile::tempdir().unwrap();
    let s = tests::Server::start(tests::config(dir.path())).await;
    let c = "fb";
    let paris = say(&s, c, "I moved to Paris in 2020 for my job.").await;
    let blue = say(&s, c, "My favourite colour is blue").await;
    say(&s, c, "I love sushi.").await;
    let cat = say(&s, c, "I have a cat named Tom who sleeps all day.").await;

    // "No, it's X not Y": the memory saying Y is replaced.
    let before = texts(
        &search(&s, c, "Where did I move to?", json!({})).await,
        "text_mem",
    );
    assert!(before.iter().any(|t| t.contains("Paris")), "{before:?}");
    let r = feedback(
        &s,
        c,
        json!({"feedback_content": "No, it's Berlin not Paris."}),
    )
    .await;
    assert_eq!(r["intent"], "replace", "{r}");
    let up = &r["update"][0];
    assert_eq!(up["archived_id"], paris.as_str(), "{r}");
    assert!(
        up["text"].as_str().unwrap().contains("Berlin in 2020"),
        "{r}"
    );
    let after = texts(
        &search(&s, c, "Where did I move to?", json!({})).await,
        "text_mem",
    );
    assert!(
        after.iter().any(|t| t.contains("Berlin in 2020")),
        "{after:?}"
    );
    assert!(!after.iter().any(|t| t.contains("Paris")), "{after:?}");
    // The old version is archived (not gone) and points at its successor; the successor
    // carries the history and is readable with it.
    let (st, old) = get(&s, &paris, "").await;
    assert_eq!(st, 200);
    assert_eq!(old["metadata"]["status"], "archived");
    let new_id = up["id"].as_str().unwrap();
    assert_eq!(old["metadata"]["info"]["successor_id"], new_id, "{old}");
    let (_, new) = get(&s, new_id, "?history=true").await;
    assert_eq!(
        new["metadata"]["info"]["covered_history"],
        paris.as_str(),
        "{new}"
    );
    let hist = new["metadata"]["history"].as_array().unwrap();
    assert_eq!(hist.last().unwrap()["update_type"], "feedback");
    assert!(
        hist.last().unwrap()["memory"]
            .as_str()
            .unwrap()
            .contains("Paris")
    );
    let (_, old_h) = get(&s, &paris, "?history=true").await;
    let versions = old_h["versions"].as_array().unwrap();
    assert_eq!(versions[0]["metadata"]["status"], "activated", "{old_h}");

    // "change it to X" on the memory the answer used.
    let r = feedback(
        &s,
        c,
        json!({"feedback_content": "Please change it to green.", "retrieved_memory_ids": [blue]}),
    )
    .await;
    assert_eq!(r["intent"], "set");
    assert_eq!(r["update"][0]["archived_id"], blue.as_str());
    assert!(
        r["update"][0]["text"]
            .as_str()
            .unwrap()
            .ends_with("is green"),
        "{r}"
    );
    let got = texts(
        &search(&s, c, "favourite colour", json!({})).await,
        "text_mem",
    );
    assert!(
        got.iter().any(|t| t.ends_with("is green")) && !got.iter().any(|t| t.contains("blue")),
        "{got:?}"
    );

    feedback_retract_forget_supplement_and_kbs(s, cat).await;
}

async fn feedback_retract_forget_supplement_and_kbs(s: tests::Server, cat: String) {
    let c = "fb";
    // "I don't like X anymore": the preference is archived and the change recorded.
    let prefs = texts(&search(&s, c, "sushi", json!({})).await, "pref_mem");
    assert!(prefs.iter().any(|t| t.contains("love sushi")), "{prefs:?}");
    let r = feedback(
        &s,
        c,
        json!({"feedback_content": "I don't like sushi anymore"}),
    )
    .await;
    assert_eq!(r["intent"], "retract");
    assert!(
        r["archive"][0]["text"]
            .as_str()
            .unwrap()
            .contains("love sushi"),
        "{r}"
    );
    let prefs = texts(&search(&s, c, "sushi", json!({})).await, "pref_mem");
    assert!(!prefs.iter().any(|t| t.contains("love sushi")), "{prefs:?}");
    assert!(
        prefs.iter().any(|t| t.contains("no longer like sushi")),
        "{prefs:?}"
    );

    // "forget that …": archived, no longer found.
    let r = feedback(
        &s,
        c,
        json!({"feedback_content": "Forget that I have a cat."}),
    )
    .await;
    assert_eq!(r["intent"], "forget");
    assert!(
        r["archive"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == cat.as_str()),
        "{r}"
    );
    let got = texts(&search(&s, c, "my cat Tom", json!({})).await, "text_mem");
    assert!(!got.iter().any(|t| t.contains("cat named Tom")), "{got:?}");
    assert_eq!(get(&s, &cat, "").await.1["metadata"]["status"], "archived");

    // Anything else supplements: added as a new memory.
    let r = feedback(
        &s,
        c,
        json!({"feedback_content": "My sister Ana is visiting in May."}),
    )
    .await;
    assert_eq!(r["intent"], "supplement");
    assert!(r["add"][0]["text"].as_str().unwrap().contains("Ana"));
    let got = texts(
        &search(&s, c, "who is visiting", json!({})).await,
        "text_mem",
    );
    assert!(got.iter().any(|t| t.contains("Ana")), "{got:?}");

    // allow_knowledgebase_ids: without it a knowledge base is never changed.
    let (st, kb) = s
        .post(
            "/product/knowledgebase",
            json!({"name": "facts", "knowledgebase_id": "kb-fb"}),
        )
        .await;
    assert_eq!(st, 200, "{kb}");
    let (st, b) = s
        .post(
            "/product/knowledgebase/kb-fb/files",
            json!({"files": [
            {"file_name": "office.txt", "content": "The office is in Lisbon."}]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let r = feedback(
        &s,
        c,
        json!({"feedback_content": "No, it's Porto not Lisbon."}),
    )
    .await;
    assert!(r["update"].as_array().unwrap().is_empty(), "{r}");
    let r = feedback(
        &s,
        c,
        json!({"feedback_content": "No, it's Porto not Lisbon.", "allow_knowledgebase_ids": ["kb-fb"]}),
    )
    .await;
    assert!(
        r["update"][0]["text"].as_str().unwrap().contains("Porto"),
        "{r}"
    );

    // The feedback records are kept with what they did.
    let txn = s.memos.store.read_txn().unwrap();
    let fbs = s.memos.store.feedback(&txn, c).unwrap();
    assert_eq!(fbs.len(), 7);
    assert!(
        fbs.iter()
            .all(|f| f.status == "processed" && f.result.is_some())
    );
    drop(txn);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_complete_index_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let s = tests::Server::start(tests::config(dir.path())).await;
    let c = "del";
    // A turn with a derived preference, a replaced fact (archived version + successor), and
    // an activation cache entry over the turn.
    let added = add(
        &s,
        c,
        json!([{"role": "user", "content": "I adore zorbing downhill. I live near Quixoteville."}]),
    )
    .await;
    let is_turn = |m: &Value| {
        let t = m["memory"].as_str().unwrap();
        t.contains("zorbing") && t.contains("Quixoteville")
    };
    let turn = added.iter().find(|m| is_turn(m)).unwrap()["memory_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Extracted from the turn: the preference and the fact.
    let derived: Vec<String> = added
        .iter()
        .filter(|m| !is_turn(m))
        .map(|m| m["memory_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(derived.len(), 2, "{added:?}");
    let fact = say(&s, c, "My locker code is wibblewobble 4471.").await;
    let r = feedback(
        &s,
        c,
        json!({"feedback_content": "No, it's 9902 not 4471."}),
    )
    .await;
    let successor = r["update"][0]["id"].as_str().unwrap().to_string();
    let keep = say(&s, c, "The weather in Oslo was mild.").await;
    {
        let st = &s.memos.store;
        let mut w = st.write_txn().unwrap();
        st.put_kv(
            &mut w,
            &store::KvEntry {
                cube_id: c.into(),
                name: "working_set".into(),
                memory_ids: vec![turn.clone(), keep.clone()],
                model_id: "test".into(),
                tokenizer_hash: "t".into(),
                token_count: 3,
                text_hash: "h".into(),
                created_at: 0,
                data: vec![1, 2, 3],
            },
        )
        .unwrap();
        st.commit(w).unwrap();
        // The metadata reads back without the tensors.
        let txn = st.read_txn().unwrap();
        let head = st.kv_head(&txn, c, "working_set").unwrap().unwrap();
        assert_eq!(head.memory_ids, vec![turn.clone(), keep.clone()]);
        assert_eq!((head.token_count, head.text_hash.as_str()), (3, "h"));
        assert!(st.kv_head(&txn, c, "other").unwrap().is_none());
    }
    let gone: Vec<String> = [turn.clone(), fact.clone(), successor.clone()]
        .into_iter()
        .chain(derived.clone())
        .collect();

    let (st, b) = s
        .post(
            "/product/delete_memory",
            json!({"memory_ids": [turn, successor], "writable_cube_ids": [c]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let receipt = &b["data"]["receipt"];
    assert_eq!(receipt["records"], gone.len(), "{b}");
    assert_eq!(receipt["derived"], gone.len() - 2, "{b}");
    assert_eq!(receipt["kv_cache"], 1, "{b}");
    assert!(receipt["history"].as_u64().unwrap() >= 1, "{b}");
    assert!(receipt["postings"].as_u64().unwrap() > 0, "{b}");

    deleted_memories_are_gone_from_every_index(s, gone, keep).await;
}

async fn deleted_memories_are_gone_from_every_index(
    s: tests::Server,
    gone: Vec<String>,
    keep: String,
) {
    let c = "del";
    // REST search.
    for q in ["zorbing", "Quixoteville", "locker code wibblewobble"] {
        let d = search(&s, c, q, json!({"dedup": "no"})).await;
        for b in ["text_mem", "pref_mem"] {
            assert!(ids(&d, b).iter().all(|i| !gone.contains(i)), "{q}: {d}");
        }
    }
    // REST get.
    for id in &gone {
        assert_eq!(get(&s, id, "").await.0, 404, "{id}");
    }
    // SQL: memories and history.
    let list = gone
        .iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(",");
    for (table, col) in [("memories", "id"), ("memory_history", "memory_id")] {
        let (st, b) = s
            .post("/sql", json!({"sql": format!("SELECT count(*) AS n FROM {table} WHERE {col} IN ({list})")}))
            .await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["data"]["rows"][0]["n"], 0, "{table}: {b}");
    }
    let store = &s.memos.store;
    let txn = store.read_txn().unwrap();
    for id in &gone {
        // ids, records, history.
        assert!(store.internal_id(&txn, id).unwrap().is_none());
        assert!(store.versions(&txn, id).unwrap().is_empty());
    }
    // Vector index: an exact-text query finds none of them among every id of the cube.
    let all = store.cube_ids(&txn, c).unwrap();
    let e = tests::embedder();
    let qv = e
        .embed(&["I adore zorbing downhill".to_string()])
        .unwrap()
        .remove(0);
    let hits = store.vector_search(&txn, &qv, 50, &all).unwrap();
    let left: Vec<String> = hits
        .iter()
        .filter_map(|(i, _)| store.record(&txn, *i).unwrap().map(|r| r.id))
        .collect();
    assert!(left.iter().all(|i| !gone.contains(i)), "{left:?}");
    assert!(left.contains(&keep));
    // Lexical index: their unique words have no postings left.
    for w in ["zorbing", "quixoteville", "wibblewobble"] {
        assert!(
            store.bm25_search(&txn, c, w, 10, &all).unwrap().is_empty(),
            "{w}"
        );
    }
    // Activation cache.
    assert!(store.kv_entries(&txn, c).unwrap().is_empty());
    drop(txn);

    // Soft delete and recover are distinct from hard delete.
    let (st, b) = s
        .post(
            "/product/delete_memory_by_record_id",
            json!({"mem_cube_id": c, "record_id": "r1"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"]["deleted"], 1);
    assert!(
        ids(
            &search(&s, c, "weather in Oslo", json!({})).await,
            "text_mem"
        )
        .is_empty()
    );
    assert_eq!(get(&s, &keep, "").await.1["metadata"]["status"], "deleted");
    let (st, _) = s
        .post(
            "/product/recover_memory_by_record_id",
            json!({"mem_cube_id": c, "delete_record_id": "nope"}),
        )
        .await;
    assert_eq!(st, 404);
    let (st, b) = s
        .post(
            "/product/recover_memory_by_record_id",
            json!({"mem_cube_id": c, "delete_record_id": "r1"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        ids(
            &search(&s, c, "weather in Oslo", json!({})).await,
            "text_mem"
        ),
        vec![keep.clone()]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_system_and_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = tests::Server::start(tests::config(dir.path())).await;
    let c = "asof";
    let t0 = store::time::micros_to_rfc3339(store::time::now_micros());
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let old = add(&s, c, json!([{"role": "user", "content": "I live in Paris.", "chat_time": "2023-01-10T09:00:00Z"}])).await[0]["memory_id"]
        .as_str()
        .unwrap()
        .to_string();
    say(&s, c, "I enjoy long walks by the river.").await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let t1 = store::time::micros_to_rfc3339(store::time::now_micros());
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let r = feedback(
        &s,
        c,
        json!({"feedback_content": "No, it's Berlin not Paris.", "feedback_time": "2024-06-01T12:00:00Z"}),
    )
    .await;
    let new = r["update"][0]["id"].as_str().unwrap().to_string();
    let q = "Where do I live?";
    // The cities the "I live in …" memories of a result name.
    let live = |d: &Value| -> Vec<&'static str> {
        texts(d, "text_mem")
            .into_iter()
            .filter(|t| t.contains("live in"))
            .map(|t| {
                if t.contains("Berlin") {
                    "Berlin"
                } else if t.contains("Paris") {
                    "Paris"
                } else {
                    "?"
                }
            })
            .collect()
    };
    // Now: Berlin.
    assert_eq!(live(&search(&s, c, q, json!({})).await), vec!["Berlin"]);
    // System time: before the add nothing, between add and feedback Paris.
    assert!(texts(&search(&s, c, q, json!({"as_of": t0})).await, "text_mem").is_empty());
    let d = search(&s, c, q, json!({"as_of": t1})).await;
    assert_eq!(live(&d), vec!["Paris"]);
    assert_eq!(ids(&d, "text_mem")[0], old);
    // Event time: Paris until the correction's event time, Berlin after.
    assert_eq!(
        live(&search(&s, c, q, json!({"event_as_of": "2023-06-01T00:00:00Z"})).await),
        vec!["Paris"]
    );
    assert_eq!(
        live(&search(&s, c, q, json!({"event_as_of": "2024-12-01T00:00:00Z"})).await),
        vec!["Berlin"]
    );
    assert!(
        live(&search(&s, c, q, json!({"event_as_of": "2022-01-01T00:00:00Z"})).await).is_empty()
    );
    // Get: the old memory as it was, and not active any more now.
    let (st, m) = get(&s, &old, &format!("?as_of={}", t1.replace('+', "%2B"))).await;
    assert_eq!(st, 200, "{m}");
    assert_eq!(m["metadata"]["status"], "activated");
    assert_eq!(get(&s, &old, "").await.1["metadata"]["status"], "archived");
    assert_eq!(
        get(&s, &new, &format!("?as_of={}", t1.replace('+', "%2B")))
            .await
            .0,
        404
    );
    let (st, b) = s
        .post(
            "/product/search",
            json!({"user_id": "u1", "readable_cube_ids": [c], "query": q, "as_of": "yesterday"}),
        )
        .await;
    assert_eq!(st, 400, "{b}");
    s.stop().await;
}

/// A two-page PDF with the standard Helvetica font, xref offsets computed.
fn pdf(pages: &[&[&str]]) -> Vec<u8> {
    let n = pages.len();
    let mut objs: Vec<String> = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".into(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {n} >>",
            (0..n)
                .map(|i| format!("{} 0 R", 4 + 2 * i))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".into(),
    ];
    for (i, lines) in pages.iter().enumerate() {
        objs.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {} 0 R /Resources << /Font << /F1 3 0 R >> >> >>",
            5 + 2 * i
        ));
        let mut content = String::from("BT /F1 12 Tf 72 720 Td 14 TL\n");
        for l in lines.iter() {
            content.push_str(&format!("({l}) Tj T*\n"));
        }
        content.push_str("ET");
        objs.push(format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        ));
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objs.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).as_bytes());
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objs.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_chunked_linked_and_searched_beside_a_cube() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.window.chunk_chars = 400;
    cfg.window.chunk_overlap = 80;
    let s = tests::Server::start(cfg).await;
    let (st, b) = s
        .post("/product/knowledgebase", json!({"name": "handbook"}))
        .await;
    assert_eq!(st, 200, "{b}");
    let kb = b["data"]["knowledgebase_id"].as_str().unwrap().to_string();

    let expenses = pdf(&[
        &[
            "Expense policy.",
            "Taxi receipts must be filed within thirty days.",
        ],
        &["Hotel stays are capped at two hundred euros per night."],
    ]);
    let html = "<!doctype html><html><head><title>x</title><script>var hidden = 1;</script></head><body>\
        <h1>Onboarding</h1><p>Welcome aboard.</p><h2>Laptops</h2><p>New hires receive a laptop on their first day from the IT desk.</p>\
        <h2>Badges</h2><p>Badges are printed at reception.</p></body></html>";
    let para: String = (1..=20)
        .map(|i| format!("Parcel {i} has volcanic soil that holds water and feeds vines. "))
        .collect();
    let md = format!("# Wine\n## Soils\n{para}\n## Grapes\nTouriga Nacional is the main grape.");
    let (st, b) = s
        .post(
            &format!("/product/knowledgebase/{kb}/files"),
            json!({"files": [
                {"file_id": "f-pdf", "file_name": "expenses.pdf",
                 "data_base64": base64::engine::general_purpose::STANDARD.encode(&expenses)},
                {"file_id": "f-html", "file_name": "onboarding.html", "content": html},
                {"file_id": "f-md", "file_name": "wine.md", "content": md},
            ]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let files = b["data"].as_array().unwrap();
    assert!(files.iter().all(|f| f["status"] == "completed"), "{b}");
    assert_eq!(files[0]["chunks"], 2, "one chunk per PDF page: {b}");

    // Chunks: RawFileMemory, file ids, section paths, neighbour links in order.
    let txn = s.memos.store.read_txn().unwrap();
    let recs = s.memos.store.cube_records(&txn, &kb).unwrap();
    drop(txn);
    assert!(
        recs.iter()
            .all(|r| r.memory_type == MemoryType::RawFileMemory)
    );
    let wine: Vec<_> = recs.iter().filter(|r| r.file_ids == ["f-md"]).collect();
    assert!(wine.len() >= 4, "{}", wine.len());
    for w in wine.windows(2) {
        assert_eq!(w[0].info["following_id"], w[1].id.as_str());
        assert_eq!(w[1].info["preceding_id"], w[0].id.as_str());
    }
    assert!(
        wine.iter()
            .all(|r| r.memory.chars().count() <= 400 + "Wine > Soils\n".len())
    );
    assert_eq!(wine.last().unwrap().info["section"], "Wine > Grapes");
    // Overlap: consecutive soil chunks share text.
    let (a, b2) = (&wine[0].memory, &wine[1].memory);
    let tail: String = a
        .chars()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(b2.contains(tail.trim()), "no overlap:\n{a}\n---\n{b2}");
    let html_recs: Vec<_> = recs.iter().filter(|r| r.file_ids == ["f-html"]).collect();
    assert!(
        html_recs
            .iter()
            .any(|r| r.info["section"] == "Onboarding > Laptops")
    );
    assert!(html_recs.iter().all(|r| !r.memory.contains("hidden")));
    assert!(recs.iter().any(|r| {
        r.memory
            .contains("Taxi receipts must be filed within thirty days")
    }));

    // Search the knowledge base beside a user's cube.
    for i in 0..6 {
        say(
            &s,
            "emp",
            &format!("I filed my taxi receipts for trip {i} late again."),
        )
        .await;
    }
    let d = search(
        &s,
        "emp",
        "When must taxi receipts be filed?",
        json!({
        "knowledgebase_ids": [kb], "top_k": 4}),
    )
    .await;
    let all = texts(&d, "text_mem");
    let docs = all
        .iter()
        .filter(|t| {
            t.contains("thirty days")
                || t.contains("Hotel")
                || t.contains("Volcanic")
                || t.contains("Onboarding")
        })
        .count();
    assert!(all.iter().any(|t| t.contains("thirty days")), "{all:?}");
    assert!(docs <= 2, "documents take at most half of top_k: {all:?}");
    let d = search(&s, &kb, "Who gives new hires a laptop?", json!({})).await;
    assert!(texts(&d, "text_mem")[0].contains("IT desk"), "{d}");

    documents_files_cloud_parts_and_deletion(s, &kb).await;
}

async fn documents_files_cloud_parts_and_deletion(s: tests::Server, kb: &str) {
    use base64::Engine;
    // Files: listed, and deleted chunk by chunk.
    let (st, b) = s.get(&format!("/product/knowledgebase/{kb}/files")).await;
    assert_eq!(st, 200);
    assert_eq!(b["data"].as_array().unwrap().len(), 3);
    let (st, b) = s
        .call(
            "DELETE",
            &format!("/product/knowledgebase/{kb}/files/f-pdf"),
            None,
            None,
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"]["receipt"]["records"], 2);
    let d = search(&s, kb, "taxi receipts", json!({})).await;
    assert!(!texts(&d, "text_mem").iter().any(|t| t.contains("Taxi")));
    // The cloud shapes see the same files.
    let (st, b) = s
        .post(
            "/api/openmem/v1/get/knowledgebase-file",
            json!({"knowledgebase_id": kb}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"]["total"], 2);
    let (st, b) = s
        .post(
            "/api/openmem/v1/delete/knowledgebase-file",
            json!({"file_ids": ["f-html"]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert!(b["data"]["deleted"].as_u64().unwrap() >= 2);
    // File parts inside a conversation: inline text and a base64 data: URL (a PDF) become
    // chunks with their file ids; the turn itself only names the files.
    let data_url = format!(
        "data:application/pdf;base64,{}",
        base64::engine::general_purpose::STANDARD
            .encode(pdf(&[&["The boiler is serviced every October."]]))
    );
    let added = add(&s, "emp", json!([{"role": "user", "content": [
        {"type": "text", "text": "Here are the building notes."},
        {"type": "file", "file": {"file_id": "f-notes", "filename": "notes.txt", "file_data": "The roof was repaired in 2021."}},
        {"type": "file", "file": {"file_id": "f-boiler", "filename": "boiler.pdf", "file_data": data_url}}]}])).await;
    let types: Vec<&str> = added
        .iter()
        .map(|m| m["memory_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types.iter().filter(|t| **t == "RawFileMemory").count(),
        2,
        "{added:?}"
    );
    let turn = added
        .iter()
        .find(|m| m["memory_type"] != "RawFileMemory")
        .unwrap();
    assert!(!turn["memory"].as_str().unwrap().contains("roof"), "{turn}");
    let d = search(
        &s,
        "emp",
        "When is the boiler serviced?",
        json!({"top_k": 1}),
    )
    .await;
    assert!(texts(&d, "text_mem")[0].contains("every October"), "{d}");
    let (st, b) = s
        .post(
            "/product/delete_memory",
            json!({"file_ids": ["f-boiler"], "writable_cube_ids": ["emp"]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert!(
        b["data"]["deleted"].as_u64().unwrap() >= 2,
        "the chunk and the turn naming it: {b}"
    );

    // A broken PDF fails alone, with its reason; the other file of the request is stored.
    let (st, b) = s
        .post(&format!("/product/knowledgebase/{kb}/files"), json!({"files": [
            {"file_name": "broken.pdf", "data_base64": base64::engine::general_purpose::STANDARD.encode(b"%PDF-1.4 nonsense")},
            {"file_name": "ok.txt", "content": "Parking is free on weekends."}]}))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"][0]["status"], "failed", "{b}");
    assert!(
        b["data"][0]["error"].as_str().unwrap().contains("PDF"),
        "{b}"
    );
    assert_eq!(b["data"][1]["status"], "completed", "{b}");
    // Deleting the knowledge base removes every chunk, with a receipt; it is gone after.
    let (st, b) = s
        .call(
            "DELETE",
            &format!("/product/knowledgebase/{kb}"),
            None,
            None,
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert!(
        b["data"]["receipt"]["records"].as_u64().unwrap() >= 3,
        "{b}"
    );
    assert_eq!(s.get(&format!("/product/knowledgebase/{kb}")).await.0, 404);
    let (st, b) = s.get("/product/knowledgebase").await;
    assert_eq!(st, 200);
    assert!(b["data"].as_array().unwrap().is_empty(), "{b}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferences_tools_and_images() {
    let dir = tempfile::tempdir().unwrap();
    let s = tests::Server::start(tests::config(dir.path())).await;
    let c = "pt";
    add(&s, c, json!([
        {"role": "system", "content": "You can call tools.\n<tool_schema>[{\"name\": \"get_weather\", \"description\": \"Weather for a city\", \"parameters\": {\"city\": \"string\"}}, {\"name\": \"book_train\", \"description\": \"Book a train\", \"parameters\": {\"from\": \"string\", \"to\": \"string\"}}]</tool_schema>"},
        {"role": "user", "content": [
            {"type": "text", "text": "I love jazz concerts. I usually take the train to work."},
            {"type": "image_url", "image_url": {"url": "https://img.test/station.jpg"}, "alt": "the central station at dawn"}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Porto\"}"}},
            {"id": "t2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Atlantis\"}"}},
            {"id": "t3", "type": "function", "function": {"name": "book_train", "arguments": "{\"from\": \"Porto\", \"to\": \"Lisbon\"}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "Sunny, 21 C"},
        {"role": "tool", "tool_call_id": "t2", "content": "{\"error\": \"unknown city Atlantis\"}"},
        {"role": "tool", "tool_call_id": "t3", "content": "{\"ticket\": \"A12\"}"},
    ])).await;
    // Preferences: explicit and implicit, in pref_mem and the pasteable pref_string.
    let d = search(
        &s,
        c,
        "What music and commute does the user like?",
        json!({}),
    )
    .await;
    let prefs = d["pref_mem"][0]["memories"].as_array().unwrap();
    let kinds: Vec<&str> = prefs
        .iter()
        .map(|p| p["metadata"]["info"]["preference_type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"explicit_preference") && kinds.contains(&"implicit_preference"),
        "{prefs:?}"
    );
    let ps = d["pref_string"].as_str().unwrap();
    assert!(
        ps.contains("Explicit Preference:\n1. user: I love jazz concerts."),
        "{ps}"
    );
    assert!(
        ps.contains("Implicit Preference:\n1. user: I usually take the train to work."),
        "{ps}"
    );
    assert!(!d["pref_note"].as_str().unwrap().is_empty());

    // Tools: one schema memory per schema, one trajectory per answered call, in tool_mem.
    let d = search(&s, c, "weather tool", json!({"tool_mem_top_k": 10})).await;
    let tools: Vec<Value> = d["tool_mem"][0]["memories"].as_array().unwrap().clone();
    let of = |t: &str| {
        tools
            .iter()
            .filter(|m| m["metadata"]["memory_type"] == t)
            .count()
    };
    assert_eq!(of("ToolSchemaMemory"), 2, "{tools:?}");
    assert_eq!(of("ToolTrajectoryMemory"), 3, "{tools:?}");
    let failed = tools
        .iter()
        .find(|m| {
            m["metadata"]["info"]["arguments"]
                .as_str()
                .is_some_and(|a| a.contains("Atlantis"))
        })
        .unwrap();
    assert_eq!(failed["metadata"]["info"]["success"], false);
    assert_eq!(failed["metadata"]["info"]["error"], "unknown city Atlantis");
    // Per-tool statistics.
    let (st, b) = s.get(&format!("/product/tool_stats?mem_cube_id={c}")).await;
    assert_eq!(st, 200, "{b}");
    let w = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"] == "get_weather")
        .unwrap()
        .clone();
    assert_eq!(
        (
            w["calls"].as_u64(),
            w["successes"].as_u64(),
            w["failures"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{b}"
    );
    assert_eq!(w["last_error"], "unknown city Atlantis");
    // The same statistics are queryable in SQL.
    let (st, b) = s
        .post("/sql", json!({"sql": "SELECT count(*) AS calls, sum(CASE WHEN info LIKE '%\"success\":false%' THEN 1 ELSE 0 END) AS failures FROM memories WHERE memory_type = 'ToolTrajectoryMemory' AND info LIKE '%\"tool_name\":\"get_weather\"%'"}))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        (
            b["data"]["rows"][0]["calls"].as_i64(),
            b["data"]["rows"][0]["failures"].as_i64()
        ),
        (Some(2), Some(1)),
        "{b}"
    );
    // Images: a memory with the URL and its caption.
    let d = search(&s, c, "central station at dawn", json!({})).await;
    let all = d["text_mem"][0]["memories"].as_array().unwrap();
    let img = all
        .iter()
        .find(|m| m["metadata"]["info"]["image_url"] == "https://img.test/station.jpg")
        .expect("image memory");
    assert!(
        img["memory"]
            .as_str()
            .unwrap()
            .contains("the central station at dawn")
    );
    assert!(
        img["metadata"]["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("multimodal:image"))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_forgets_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.memory.capacity.insert("UserMemory".into(), 3);
    let s = tests::Server::start(cfg).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(say(&s, "cap", &format!("Note number {i} about gardening.")).await);
    }
    let txn = s.memos.store.read_txn().unwrap();
    let status: Vec<Status> = ids
        .iter()
        .map(|i| s.memos.store.get(&txn, i).unwrap().unwrap().status)
        .collect();
    assert_eq!(
        status,
        [
            Status::Archived,
            Status::Archived,
            Status::Activated,
            Status::Activated,
            Status::Activated
        ]
    );
    drop(txn);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_gives_identical_results() {
    let dir = tempfile::tempdir().unwrap();
    let a = tests::Server::start(tests::config(&dir.path().join("a"))).await;
    let c = "exp";
    for t in [
        "I moved to Lyon in 2019.",
        "I love climbing. I usually climb on Sundays.",
        "My daughter plays the cello.",
        "We adopted a greyhound named Flash.",
    ] {
        say(&a, c, t).await;
    }
    add(&a, c, json!([
        {"role": "assistant", "content": "", "tool_calls": [{"id": "x", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "x", "content": "found"}])).await;
    feedback(
        &a,
        c,
        json!({"feedback_content": "No, it's Grenoble not Lyon."}),
    )
    .await;
    let out = dir.path().join("snapshot");
    let (st, b) = a
        .post(
            "/product/export_cube",
            json!({"mem_cube_id": c, "dir": out}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"]["format"], "memos-cube");
    assert!(out.join("memories.parquet").exists() && out.join("manifest.json").exists());
    let (st, _) = a
        .post(
            "/product/export_cube",
            json!({"mem_cube_id": c, "dir": out}),
        )
        .await;
    assert_eq!(st, 400, "refuses a non-empty directory");

    let b_srv = tests::Server::start(tests::config(&dir.path().join("b"))).await;
    let (st, r) = b_srv
        .post("/product/import_cube", json!({"dir": out}))
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["data"]["memories"], b["data"]["counts"]["memories"]);
    let (st, _) = b_srv
        .post("/product/import_cube", json!({"dir": out}))
        .await;
    assert_eq!(st, 409);
    // Both stores fold their vectors into the ANN trees (as an idle server does) first.
    for srv in [&a, &b_srv] {
        let st = &srv.memos.store;
        let mut w = st.write_txn().unwrap();
        st.finish(&mut w, true).unwrap();
        st.commit(w).unwrap();
    }
    for q in [
        "Where did I move?",
        "climbing",
        "cello",
        "dog",
        "lookup tool",
        "Lyon",
    ] {
        let x = search(&a, c, q, json!({"dedup": "no"})).await;
        let y = search(&b_srv, c, q, json!({"dedup": "no"})).await;
        for bucket in ["text_mem", "pref_mem", "tool_mem"] {
            assert_eq!(ids(&x, bucket), ids(&y, bucket), "{q} {bucket}");
            let sx: Vec<f64> = x[bucket][0]["memories"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["metadata"]["relativity"].as_f64().unwrap())
                .collect();
            let sy: Vec<f64> = y[bucket][0]["memories"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["metadata"]["relativity"].as_f64().unwrap())
                .collect();
            assert_eq!(sx, sy, "{q} {bucket}");
        }
    }
    // History travels: the archived Lyon version and its successor's history.
    let txn = b_srv.memos.store.read_txn().unwrap();
    let recs = b_srv.memos.store.cube_records(&txn, c).unwrap();
    let lyon = recs.iter().find(|r| r.memory.contains("Lyon")).unwrap();
    assert_eq!(lyon.status, Status::Archived);
    assert_eq!(b_srv.memos.store.versions(&txn, &lyon.id).unwrap().len(), 1);
    drop(txn);
    a.stop().await;
    b_srv.stop().await;
}
