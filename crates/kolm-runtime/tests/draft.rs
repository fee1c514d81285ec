//! Drafting on the real SmolLM2-135M weights: the output with drafting on
//! is the output with it off (greedy over 100+ prompts at 1 and 4 streams;
//! sampled: same seeds, same tokens, and token frequencies that agree), the
//! accounting adds up on packs built to be right and to be wrong, and a
//! request's drafts owe nothing to the requests before it.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use kolm_artifact::recipes::{MineParams, RecipePack};
use kolm_runtime::{
    BaseHandle, BaseOptions, ChatMessage, ChatTemplate, Completion, ContextHandle, ContextSpec,
    DraftConfig, DraftPolicy, DraftSource, DraftStats, FinishReason, GenerateEvent,
    GenerateRequest, Grammar, Runtime, SamplingParams,
};

fn base() -> &'static BaseHandle {
    static BASE: OnceLock<BaseHandle> = OnceLock::new();
    BASE.get_or_init(|| {
        Runtime
            .load_base(&kolm_fixtures::smollm2(), &BaseOptions { gpu_layers: 0 })
            .unwrap()
    })
}

fn context(slots: u32, draft: DraftConfig) -> ContextHandle {
    base()
        .attach(ContextSpec {
            slots,
            context_per_slot: 512,
            batch: 256,
            threads: 2,
            max_queue: 256,
            draft,
            ..ContextSpec::default()
        })
        .unwrap()
}

/// Drafting everything the sources offer: these tests exercise the
/// verification, whatever the cost model would choose on this machine.
fn drafting(recipes: Option<RecipePack>) -> DraftConfig {
    DraftConfig {
        recipes: recipes.map(Arc::new),
        policy: DraftPolicy::Eager,
        ..DraftConfig::default()
    }
}

fn chat(system: &str, user: &str) -> String {
    let info = base().info();
    let template =
        ChatTemplate::new(info.chat_template.as_deref().unwrap(), &info.bos, &info.eos).unwrap();
    template
        .render(&[
            ChatMessage {
                role: "system".into(),
                content: system.into(),
            },
            ChatMessage {
                role: "user".into(),
                content: user.into(),
            },
        ])
        .unwrap()
}

fn request(prompt: &str, max_tokens: u32, draft: bool) -> GenerateRequest {
    GenerateRequest {
        prompt: prompt.to_owned(),
        add_bos: true,
        params: SamplingParams::greedy(),
        max_tokens,
        stop: vec![],
        grammar: None,
        draft,
    }
}

/// Runs requests concurrently to the end: (text, completion) each.
fn run_all(ctx: &ContextHandle, requests: Vec<GenerateRequest>) -> Vec<(String, Completion)> {
    let streams: Vec<_> = requests
        .into_iter()
        .map(|r| ctx.generate(r).unwrap())
        .collect();
    streams
        .into_iter()
        .map(|mut s| {
            let mut text = String::new();
            loop {
                match s.blocking_next().expect("a stream ends with Done") {
                    GenerateEvent::Text(t) => text.push_str(&t),
                    GenerateEvent::Done(c) => return (text, c),
                    GenerateEvent::Failed(e) => panic!("{e}"),
                }
            }
        })
        .collect()
}

fn run(ctx: &ContextHandle, request: GenerateRequest) -> (String, Completion) {
    run_all(ctx, vec![request]).pop().unwrap()
}

fn tokens(text: &str) -> Vec<u32> {
    base()
        .tokenize(text)
        .unwrap()
        .into_iter()
        .map(|t| t as u32)
        .collect()
}

/// The meetings task's inputs (examples, tests, unseen tests), as the
/// compiled artifact is asked them.
fn meeting_prompts() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../daemon/tests/data/meetings");
    let mut out = Vec::new();
    for file in ["examples.jsonl", "tests.jsonl", "tests-unseen.jsonl"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            out.push(chat(
                "Extract who the meeting is with and when, as JSON with the keys who and time.",
                v["input"].as_str().unwrap(),
            ));
        }
    }
    out
}

/// 100+ prompts: the task's inputs, free chat, copying, and JSON-schema
/// requests.
fn prompts() -> Vec<GenerateRequest> {
    let mut out: Vec<GenerateRequest> = meeting_prompts()
        .iter()
        .map(|p| request(p, 24, true))
        .collect();
    let chats = [
        "What is the capital of France?",
        "Name three colors.",
        "Count from one to ten.",
        "Say hello in French.",
        "What is 2+2?",
        "Write a haiku about the sea.",
        "List the days of the week.",
        "What is water made of?",
        "Give me a synonym for happy.",
        "Describe a cat in one sentence.",
        "What do bees make?",
        "Name a planet.",
        "Spell the word cat.",
        "What color is the sky?",
        "Tell me a fun fact.",
        "What is the opposite of cold?",
        "Who wrote Hamlet?",
        "How many legs does a spider have?",
        "What is the largest ocean?",
        "Translate 'thank you' to Spanish.",
    ];
    for c in chats {
        out.push(request(&chat("You are a helpful assistant.", c), 24, true));
    }
    let copies = [
        "the quick brown fox jumps over the lazy dog",
        "alpha beta gamma delta epsilon zeta eta theta",
        "one two three four five six seven eight nine ten",
        "red orange yellow green blue indigo violet",
        "Monday Tuesday Wednesday Thursday Friday Saturday Sunday",
        "January February March April May June July August",
        "to be or not to be that is the question",
        "the rain in Spain stays mainly in the plain",
        "a stitch in time saves nine and nine saves more",
        "all that glitters is not gold and never was",
    ];
    for c in copies {
        out.push(request(
            &chat(
                "You repeat the user's text exactly.",
                &format!("Repeat this twice: {c}"),
            ),
            32,
            true,
        ));
    }
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"who": {"type": "string"}, "time": {"type": "string"}},
        "required": ["who", "time"],
        "additionalProperties": false
    });
    for p in meeting_prompts().into_iter().take(26) {
        let mut r = request(&p, 32, true);
        r.grammar = Some(Grammar::JsonSchema(schema.clone()));
        out.push(r);
    }
    out
}

fn off(mut r: GenerateRequest) -> GenerateRequest {
    r.draft = false;
    r
}

fn summed(results: &[(String, Completion)]) -> DraftStats {
    let mut total = DraftStats::default();
    for (_, c) in results {
        let d = c.draft.expect("drafting was on");
        total.drafted += d.drafted;
        total.accepted += d.accepted;
        total.steps += d.steps;
        for (t, s) in total.by_source.iter_mut().zip(d.by_source) {
            t.drafted += s.drafted;
            t.accepted += s.accepted;
        }
    }
    total
}

#[test]
fn greedy_output_is_the_same_with_drafting_on_and_off_at_1_and_4_streams() {
    let requests = prompts();
    assert!(requests.len() >= 100, "{} prompts", requests.len());
    let ctx = context(4, drafting(None));
    let plain: Vec<(String, Completion)> =
        requests.iter().map(|r| run(&ctx, off(r.clone()))).collect();
    for (_, c) in &plain {
        assert!(
            c.draft.is_none(),
            "a request with draft: false drafts nothing"
        );
    }
    // One stream at a time.
    let one: Vec<(String, Completion)> = requests.iter().map(|r| run(&ctx, r.clone())).collect();
    // Four at a time.
    let mut four = Vec::new();
    for chunk in requests.chunks(4) {
        four.extend(run_all(&ctx, chunk.to_vec()));
    }
    for (i, ((p, o), f)) in plain.iter().zip(&one).zip(&four).enumerate() {
        assert_eq!(p.0, o.0, "prompt {i}: 1 stream, drafting changed the text");
        assert_eq!(p.0, f.0, "prompt {i}: 4 streams, drafting changed the text");
        assert_eq!(p.1.completion_tokens, o.1.completion_tokens, "prompt {i}");
        assert_eq!(p.1.finish_reason, o.1.finish_reason, "prompt {i}");
    }
    // The accounting adds up: each step samples one token of the model's
    // own, each accepted draft one more.
    for (i, (_, c)) in one.iter().enumerate() {
        let d = c.draft.unwrap();
        assert!(d.accepted <= d.drafted, "prompt {i}: {d:?}");
        // No stop sequences here: `Stop` is the end token, sampled too.
        let n = c.completion_tokens + u32::from(c.finish_reason == FinishReason::Stop);
        assert_eq!(d.steps + d.accepted, n, "prompt {i}: {d:?}");
        let by_source: u32 = d.by_source.iter().map(|s| s.drafted).sum();
        assert_eq!(by_source, d.drafted, "prompt {i}");
    }
    let total = summed(&one);
    assert!(
        total.accepted > 0,
        "copying and JSON prompts accept drafts: {total:?}"
    );
    assert!(
        total.steps < one.iter().map(|(_, c)| c.completion_tokens).sum::<u32>(),
        "drafting saves steps: {total:?}"
    );
    let grammar = total.by_source[DraftSource::Grammar as usize];
    assert!(grammar.accepted > 0, "the schema forces tokens: {total:?}");
}

#[test]
fn a_pack_that_knows_the_answer_is_accepted_whole_and_a_wrong_one_never() {
    let prompt = chat("You are a helpful assistant.", "Name three colors.");
    let ctx = context(1, drafting(None));
    let (text, plain) = run(&ctx, request(&prompt, 32, false));
    let answer = tokens(&text);
    assert!(answer.len() >= 8, "{text}");

    // Right: mined from the very answer (twice, to pass min_count 2).
    let right =
        RecipePack::mine_tokens(&[answer.clone(), answer.clone()], MineParams::default()).unwrap();
    let ctx = context(1, drafting(Some(right)));
    let (same, c) = run(&ctx, request(&prompt, 32, true));
    assert_eq!(same, text);
    let d = c.draft.unwrap();
    let recipes = d.source(DraftSource::Recipes);
    assert!(recipes.drafted > 0, "{d:?}");
    assert_eq!(
        recipes.accepted, recipes.drafted,
        "every recipe is right: {d:?}"
    );
    assert!(
        d.steps < plain.completion_tokens / 2,
        "{} tokens in {} steps: {d:?}",
        plain.completion_tokens,
        d.steps
    );

    // Wrong: every token of the answer is followed by a token it never has.
    let never = (1000u32..)
        .find(|t| !answer.contains(t))
        .expect("a token outside the answer");
    let wrong_seqs: Vec<Vec<u32>> = answer
        .iter()
        .flat_map(|&t| [vec![t, never], vec![t, never]])
        .collect();
    let wrong = RecipePack::mine_tokens(
        &wrong_seqs,
        MineParams {
            max_context: 1,
            ..MineParams::default()
        },
    )
    .unwrap();
    let ctx = context(1, drafting(Some(wrong)));
    let (same, c) = run(&ctx, request(&prompt, 32, true));
    assert_eq!(same, text, "wrong drafts never change the output");
    let d = c.draft.unwrap();
    assert!(d.source(DraftSource::Recipes).drafted > 0, "{d:?}");
    assert_eq!(d.accepted, 0, "{d:?}");
}

#[test]
fn sampled_output_keeps_its_seed_and_its_distribution() {
    let prompt = chat(
        "You repeat the user's text exactly.",
        "Repeat: the cat sat on the mat, the cat sat on the mat",
    );
    let ctx = context(1, drafting(None));
    let sampled = |seed: u32, draft: bool| {
        let mut r = request(&prompt, 12, draft);
        r.params = SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            ..SamplingParams::default()
        };
        run(&ctx, r)
    };
    let mut freq_on = std::collections::HashMap::<u32, [u32; 2]>::new();
    let mut accepted = 0;
    for seed in 0..40 {
        let (a, c) = sampled(seed, true);
        let (b, _) = sampled(seed, false);
        assert_eq!(a, b, "seed {seed}: the same seed gives the same text");
        accepted += c.draft.unwrap().accepted;
        for (k, text) in [&a, &b].into_iter().enumerate() {
            for t in tokens(text) {
                freq_on.entry(t).or_default()[k] += 1;
            }
        }
    }
    assert!(accepted > 0, "drafts were accepted while sampling");
    // Two-sample chi-square over the tokens seen at least 5 times.
    let (mut chi2, mut df) = (0.0f64, 0usize);
    let total: [u32; 2] = freq_on
        .values()
        .fold([0, 0], |acc, f| [acc[0] + f[0], acc[1] + f[1]]);
    for f in freq_on.values().filter(|f| f[0] + f[1] >= 5) {
        let n = f64::from(f[0] + f[1]);
        let all = f64::from(total[0] + total[1]);
        for k in 0..2 {
            let expected = n * f64::from(total[k]) / all;
            chi2 += (f64::from(f[k]) - expected).powi(2) / expected;
        }
        df += 1;
    }
    // Well under the 99.9% point of chi-square with df-1 degrees.
    let bound = 3.0 * df as f64 + 10.0;
    assert!(chi2 <= bound, "chi2 {chi2} over {df} tokens");
}

#[test]
fn a_request_s_drafts_owe_nothing_to_earlier_requests() {
    let primer = chat(
        "You repeat the user's text exactly.",
        "zebra quartz violin zebra quartz violin zebra quartz violin",
    );
    let probe = chat("You are a helpful assistant.", "Say zebra quartz.");
    let fresh = context(1, drafting(None));
    let (alone_text, alone) = run(&fresh, request(&probe, 16, true));
    let primed = context(1, drafting(None));
    run(&primed, request(&primer, 24, true));
    let (after_text, after) = run(&primed, request(&probe, 16, true));
    assert_eq!(alone_text, after_text);
    assert_eq!(
        alone.draft, after.draft,
        "the same prompt drafts the same with or without a primer before it"
    );
}
