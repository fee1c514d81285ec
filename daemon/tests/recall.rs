//! Recall end to end: an artifact packed with a recall index of a small
//! corpus and its embedder, installed, and served by the real kolmd. A chat
//! request is grounded and cites the right source; `recall: false` and
//! `recall.k` are honoured; `/v1/embeddings` uses the artifact's embedder.

mod common;

use std::sync::OnceLock;

use common::{minilm_zip, Daemon};
use kolm_artifact::{names, Component, NoProgress, PackSpec};
use serde_json::{json, Value};

/// Installs `docs`: SmolLM2 + the index of three small documents.
fn install_docs() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let home = kolm_store::Home::at(common::home());
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("corpus");
        std::fs::create_dir_all(&corpus).unwrap();
        std::fs::write(
            corpus.join("harbour.md"),
            "# Port Isaac harbour\n\nVisitors moor on the north wall. The harbourmaster's mooring fee is 12 pounds a night.\n",
        )
        .unwrap();
        std::fs::write(
            corpus.join("lighthouse.txt"),
            "The lighthouse lamp is trimmed every evening at dusk, and the foghorn sounds twice a minute in fog.\n",
        )
        .unwrap();
        std::fs::write(
            corpus.join("bread.txt"),
            "Sourdough starter is fed flour and water every day; the loaf bakes at 230 degrees.\n",
        )
        .unwrap();
        let index = dir.path().join("index.sqlite");
        let options = kolm_recall::BuildOptions {
            embedder: minilm_zip(),
            ..Default::default()
        };
        kolm_recall::build_index(&corpus, &index, &options, &NoProgress).unwrap();
        let files = kolm_recall::EmbedderFiles::load(&minilm_zip()).unwrap();
        let staged = dir.path().join("embedder");
        let mut spec = PackSpec::new("docs", "0.1.0", common::smollm2());
        for p in files.write_to(&staged).unwrap() {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            spec.components
                .push(Component::new(&format!("{}{name}", names::EMBEDDER_DIR), p));
        }
        spec.components.push(Component::new(names::RECALL_INDEX, &index));
        let keyring = home.keyring();
        let (key, _) = keyring.signing_key_or_create_default(None).unwrap();
        let out = dir.path().join("docs.kolm");
        kolm_artifact::pack(spec, &[&key], &keyring.receipt_key().unwrap(), &out, &NoProgress)
            .unwrap();
        let policy = keyring.trust_policy(false).unwrap();
        home.store().unwrap().install(&out, &policy, &NoProgress).unwrap();
    });
}

fn ask(d: &Daemon, question: &str, recall: Option<Value>) -> Value {
    let mut body = json!({
        "model": "docs",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 8,
        "temperature": 0,
    });
    if let Some(r) = recall {
        body["recall"] = r;
    }
    let r = d.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn grounded_chat_cites_the_right_source() {
    install_docs();
    let d = Daemon::start("");
    let v = ask(
        &d,
        "How much does it cost to moor a boat at Port Isaac?",
        None,
    );
    let citations = v["kolm"]["citations"].as_array().expect("citations");
    assert_eq!(citations.len(), 3, "{v}");
    assert_eq!(citations[0]["source"], "harbour.md", "{v}");
    assert!(citations[0]["score"].as_f64().unwrap() > citations[1]["score"].as_f64().unwrap());
    assert_eq!(citations[0]["offset"], 0);
    assert!(citations[0]["end"].as_u64().unwrap() > 50);
    let grounded_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();

    // k, and off.
    let one = ask(
        &d,
        "When is the lighthouse lamp trimmed?",
        Some(json!({"k": 1})),
    );
    let c = one["kolm"]["citations"].as_array().unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["source"], "lighthouse.txt");
    let off = ask(
        &d,
        "How much does it cost to moor a boat at Port Isaac?",
        Some(json!(false)),
    );
    assert!(off["kolm"].get("citations").is_none(), "{off}");
    let plain_tokens = off["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        grounded_tokens > plain_tokens + 40,
        "{grounded_tokens} vs {plain_tokens}"
    );
    // A bad extension value is a 400.
    let r = d.post(
        "/v1/chat/completions",
        &json!({"model": "docs", "messages": [{"role": "user", "content": "hi"}], "recall": {"k": 1000}}),
    );
    assert_eq!(r.error(400)["param"], "recall");

    // Streaming: the citations ride on the first chunk.
    let s = d.post(
        "/v1/chat/completions",
        &json!({"model": "docs", "messages": [{"role": "user", "content": "How is the sourdough starter fed?"}],
                "max_tokens": 4, "temperature": 0, "stream": true}),
    );
    assert_eq!(s.status, 200, "{}", s.text());
    let events = s.events();
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(
        first["kolm"]["citations"][0]["source"], "bread.txt",
        "{first}"
    );

    // An artifact without an index is not grounded.
    let plain = d.post(
        "/v1/chat/completions",
        &json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    );
    assert_eq!(plain.status, 200);
    assert!(plain.json()["kolm"].get("citations").is_none());
}

#[test]
fn embeddings_use_the_artifacts_embedder() {
    install_docs();
    let d = Daemon::start("");
    let r = d.post(
        "/v1/embeddings",
        &json!({"model": "docs", "input": ["mooring fees", "sourdough"]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let got: Vec<f32> = v["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(got.len(), 384);
    let m = kolm_recall::MiniLm::load(&minilm_zip()).unwrap();
    use kolm_recall::Embedder as _;
    let want = m.embed(&["mooring fees"]).unwrap().pop().unwrap();
    let cos: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
    assert!(cos > 0.9999, "cosine {cos}");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() >= 4);
    let bad = d.post(
        "/v1/embeddings",
        &json!({"model": "docs", "input": "x", "dimensions": 576}),
    );
    assert_eq!(bad.error(400)["param"], "dimensions");
}

/// gRPC `Generate` with a conversation is grounded like the HTTP chat: the
/// citations come in the first message; `recall_k` 0 turns it off and a
/// `recall_k` over the limit is refused.
#[test]
fn grpc_generate_is_grounded_and_cites() {
    use kolm_proto::daemon::v1 as pb;

    install_docs();
    let d = Daemon::start("");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = kolm_proto::connect_unix(&d.socket).await.unwrap();
        let request = |recall_k: Option<u32>| pb::GenerateRequest {
            model: "docs".into(),
            prompt: Some(pb::generate_request::Prompt::Messages(pb::ChatMessages {
                messages: vec![pb::ChatMessage {
                    role: "user".into(),
                    content: "When is the lighthouse lamp trimmed?".into(),
                }],
            })),
            temperature: Some(0.0),
            max_tokens: Some(4),
            recall_k,
            ..Default::default()
        };
        let first_message = |r: pb::GenerateRequest| {
            let mut client = client.clone();
            async move {
                let mut stream = client.generate(r).await?.into_inner();
                let first = stream.message().await?.expect("a first message");
                let mut rest_cited = false;
                while let Some(m) = stream.message().await? {
                    rest_cited |= !m.citations.is_empty();
                }
                assert!(!rest_cited, "citations come once, in the first message");
                Ok::<_, tonic::Status>(first)
            }
        };
        let grounded = first_message(request(None)).await.unwrap();
        assert_eq!(grounded.citations.len(), 3, "{grounded:?}");
        assert_eq!(grounded.citations[0].source, "lighthouse.txt");
        let one = first_message(request(Some(1))).await.unwrap();
        assert_eq!(one.citations.len(), 1);
        let off = first_message(request(Some(0))).await.unwrap();
        assert!(off.citations.is_empty());
        let refused = client.generate(request(Some(1000))).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("recall_k"), "{refused:?}");
    });

    // The embedder's weights count in the artifact's memory: beside a plain
    // artifact on the same base and settings, it holds exactly them more.
    d.chat("smollm2", json!({"max_tokens": 1}));
    let metrics = d.get("/metrics").text();
    let memory = |model: &str| -> u64 {
        let prefix = format!("kolm_model_memory_bytes{{model=\"{model}\"");
        metrics
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no memory line for {model}:\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let embedder: u64 = kolm_recall::EmbedderFiles::load(&minilm_zip())
        .unwrap()
        .files()
        .values()
        .map(|f| f.len() as u64)
        .sum();
    assert_eq!(memory("docs:0.1.0") - memory("smollm2:0.1.0"), embedder);
}

/// A grounded chat takes the same path on both doors: the same chunks, the
/// same citations, the same bytes, greedy and sampled with a seed.
#[test]
fn a_grounded_chat_is_the_same_over_http_and_grpc() {
    install_docs();
    let d = Daemon::start("");
    let question = "How much does it cost to moor a boat at Port Isaac?";
    for (body, args) in [
        (
            json!({"temperature": 0, "max_tokens": 16}),
            vec!["--temperature", "0", "--max-tokens", "16"],
        ),
        (
            json!({"temperature": 0.8, "seed": 3, "max_tokens": 16, "recall": {"k": 2}}),
            vec![
                "--temperature",
                "0.8",
                "--seed",
                "3",
                "--max-tokens",
                "16",
                "--recall-k",
                "2",
            ],
        ),
    ] {
        let [http, grpc] = d.chat_both_ways("docs", question, body.clone(), &args);
        assert_eq!(
            http.sources.first().map(String::as_str),
            Some("harbour.md"),
            "{body}"
        );
        assert_eq!(http, grpc, "{body}");
    }
}
