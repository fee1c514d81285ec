//! The engine on the real SmolLM2-135M weights: generation, batching,
//! stops, limits, constrained JSON, cancellation, the queue bound, two
//! contexts on one base, and embeddings.

use std::path::PathBuf;
use std::sync::OnceLock;

use kolm_runtime::{
    BaseHandle, BaseOptions, ChatMessage, ChatTemplate, ContextHandle, ContextSpec, FinishReason,
    GenerateEvent, GenerateRequest, Grammar, Runtime, RuntimeError, SamplingParams,
};

fn smollm2() -> PathBuf {
    kolm_fixtures::smollm2()
}

/// One base for all tests in this binary (loading it once is the point).
fn base() -> &'static BaseHandle {
    static BASE: OnceLock<BaseHandle> = OnceLock::new();
    BASE.get_or_init(|| {
        Runtime
            .load_base(&smollm2(), &BaseOptions { gpu_layers: 0 })
            .unwrap()
    })
}

fn context(slots: u32, max_queue: usize) -> ContextHandle {
    base()
        .attach(ContextSpec {
            slots,
            context_per_slot: 512,
            batch: 256,
            threads: 2,
            max_queue,
            ..ContextSpec::default()
        })
        .unwrap()
}

fn chat_prompt(user: &str) -> String {
    let info = base().info();
    let template =
        ChatTemplate::new(info.chat_template.as_deref().unwrap(), &info.bos, &info.eos).unwrap();
    template
        .render(&[
            // Without a system message SmolLM2's template inserts its own
            // default one, under which the 135M model rambles (it answers
            // "L'Étoile, la Marseillaise, ..." to the capital question).
            ChatMessage {
                role: "system".into(),
                content: "You are a helpful assistant.".into(),
            },
            ChatMessage {
                role: "user".into(),
                content: user.into(),
            },
        ])
        .unwrap()
}

fn request(prompt: &str, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        prompt: prompt.to_owned(),
        add_bos: true,
        params: SamplingParams::greedy(),
        max_tokens,
        stop: vec![],
        grammar: None,
        draft: true,
    }
}

/// Runs a request to the end: (text, finish reason, completion tokens).
fn collect(
    ctx: &ContextHandle,
    req: GenerateRequest,
) -> Result<(String, FinishReason, u32), RuntimeError> {
    let mut stream = ctx.generate(req)?;
    let mut text = String::new();
    while let Some(event) = stream.blocking_next() {
        match event {
            GenerateEvent::Text(t) => text.push_str(&t),
            GenerateEvent::Done(c) => return Ok((text, c.finish_reason, c.completion_tokens)),
            GenerateEvent::Failed(e) => return Err(e),
        }
    }
    panic!("the stream ended without Done")
}

#[test]
fn greedy_chat_answers_and_is_deterministic() {
    let ctx = context(2, 8);
    let prompt = chat_prompt("What is the capital of France?");
    assert!(prompt.contains("<|im_start|>assistant"), "{prompt}");
    let (a, reason, n) = collect(&ctx, request(&prompt, 24)).unwrap();
    let (b, _, _) = collect(&ctx, request(&prompt, 24)).unwrap();
    assert_eq!(
        a, b,
        "greedy decoding must repeat (the second run reuses the cached prefix)"
    );
    assert!(a.contains("Paris"), "{a}");
    assert!(n > 0 && n <= 24);
    // The reason agrees with the count: the budget used up is `Length`,
    // an answer that ended before it is `Stop`.
    let expected = if n == 24 {
        FinishReason::Length
    } else {
        FinishReason::Stop
    };
    assert_eq!(reason, expected, "{n} tokens: {a}");
}

#[test]
fn batched_requests_give_the_same_greedy_text_as_single_ones() {
    let ctx = context(4, 8);
    let prompts: Vec<String> = [
        "Name a color.",
        "Count to five.",
        "Say hello.",
        "What is 2+2?",
    ]
    .iter()
    .map(|p| chat_prompt(p))
    .collect();
    let single: Vec<String> = prompts
        .iter()
        .map(|p| collect(&ctx, request(p, 16)).unwrap().0)
        .collect();
    let streams: Vec<_> = prompts
        .iter()
        .map(|p| ctx.generate(request(p, 16)).unwrap())
        .collect();
    let batched: Vec<String> = streams
        .into_iter()
        .map(|mut s| {
            let mut t = String::new();
            while let Some(e) = s.blocking_next() {
                match e {
                    GenerateEvent::Text(x) => t.push_str(&x),
                    GenerateEvent::Done(_) => break,
                    GenerateEvent::Failed(e) => panic!("{e}"),
                }
            }
            t
        })
        .collect();
    assert_eq!(single, batched);
}

#[test]
fn max_tokens_and_stop_sequences_end_generation() {
    let ctx = context(1, 8);
    let prompt = chat_prompt("Write a long story about a dragon.");
    let (_, reason, n) = collect(&ctx, request(&prompt, 5)).unwrap();
    assert_eq!((reason, n), (FinishReason::Length, 5));

    let (full, _, _) = collect(&ctx, request(&prompt, 40)).unwrap();
    let word = full
        .split_whitespace()
        .nth(3)
        .expect("a few words")
        .to_owned();
    let mut stopped = request(&prompt, 40);
    stopped.stop = vec![word.clone()];
    let (text, reason, _) = collect(&ctx, stopped).unwrap();
    assert_eq!(reason, FinishReason::Stop);
    assert!(
        !text.contains(&word),
        "the stop sequence {word:?} was emitted: {text:?}"
    );
    assert!(full.starts_with(&text), "{full:?} / {text:?}");
}

#[test]
fn json_schema_output_parses_and_validates() {
    let ctx = context(1, 8);
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": false
    });
    let mut req = request(&chat_prompt("Describe a person as JSON."), 64);
    req.grammar = Some(Grammar::JsonSchema(schema));
    let (text, reason, _) = collect(&ctx, req).unwrap();
    assert_eq!(reason, FinishReason::Stop, "{text}");
    let value: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(
        value["name"].is_string() && value["age"].is_i64(),
        "{value}"
    );

    let mut bad = request("x", 8);
    bad.grammar = Some(Grammar::JsonSchema(
        serde_json::json!({"type": "no-such-type"}),
    ));
    assert!(matches!(
        collect(&ctx, bad),
        Err(RuntimeError::InvalidGrammar(_))
    ));
}

#[test]
fn a_prompt_over_the_context_is_refused() {
    let ctx = context(1, 8);
    let long = "word ".repeat(2000);
    match collect(&ctx, request(&long, 8)) {
        Err(RuntimeError::PromptTooLong {
            prompt_tokens,
            context,
        }) => {
            assert!(prompt_tokens > context && context == 512)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_dropped_stream_frees_its_slot_and_the_queue_is_bounded() {
    let ctx = context(1, 1);
    let prompt = chat_prompt("Tell me everything about the history of Rome.");
    let mut first = ctx.generate(request(&prompt, 400)).unwrap();
    assert!(matches!(
        first.blocking_next(),
        Some(GenerateEvent::Text(_))
    ));
    // This machine's time per token, from 16 tokens of the first answer.
    let started = std::time::Instant::now();
    for _ in 0..16 {
        assert!(matches!(
            first.blocking_next(),
            Some(GenerateEvent::Text(_))
        ));
    }
    let per_token = started.elapsed() / 16;
    let _waiting = ctx.generate(request(&prompt, 4)).unwrap();
    assert!(matches!(
        ctx.generate(request(&prompt, 4)),
        Err(RuntimeError::QueueFull(_))
    ));
    drop(_waiting);
    drop(first);
    // The only slot is free again: a new request completes, in far less
    // time than the dropped answer's 380-odd tokens left would take.
    let started = std::time::Instant::now();
    let (_, reason, n) = collect(&ctx, request(&prompt, 3)).unwrap();
    assert_eq!((reason, n), (FinishReason::Length, 3));
    let bound = per_token * 150;
    assert!(
        started.elapsed() < bound,
        "the new request took {:?}, over {bound:?} (150 tokens): the slot was not freed",
        started.elapsed()
    );
}

#[test]
fn two_contexts_share_one_base() {
    let a = context(1, 4);
    let b = context(1, 4);
    let prompt = chat_prompt("Say hi.");
    let (x, _, _) = collect(&a, request(&prompt, 8)).unwrap();
    let (y, _, _) = collect(&b, request(&prompt, 8)).unwrap();
    assert_eq!(x, y);
}

#[test]
fn embeddings_are_normalised_and_meaningful() {
    let e = base()
        .embed(vec![
            "The cat sat on the mat.".into(),
            "A cat is sitting on a mat.".into(),
            "Stock markets fell sharply today.".into(),
        ])
        .unwrap();
    assert_eq!(e.vectors.len(), 3);
    let dim = base().info().embedding_size as usize;
    for v in &e.vectors {
        assert_eq!(v.len(), dim);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3);
    }
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(cos(&e.vectors[0], &e.vectors[1]) > cos(&e.vectors[0], &e.vectors[2]));
    assert!(matches!(
        base().embed(vec![String::new()]),
        Err(RuntimeError::EmptyPrompt)
    ));
}
