use super::*;
use crate::example::Input;
use proptest::prelude::*;
use serde_json::json;

fn ex(input: &str, output: &str) -> Example {
    Example {
        input: Input::Text(input.into()),
        output: Some(output.into()),
        assertions: vec![],
        origin: None,
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn infers_json_kind_and_gates_on_schema() {
    let examples: Vec<Example> = [
        r#"{"item":"apple","qty":2,"status":"open"}"#,
        r#"{"item":"pear","qty":1,"status":"open"}"#,
        r#"{"item":"fig","qty":5,"status":"closed"}"#,
        r#"{"item":"kiwi","qty":3,"status":"closed"}"#,
    ]
    .iter()
    .enumerate()
    .map(|(i, o)| ex(&format!("order {i}"), o))
    .collect();
    let v = Verifier::infer(&examples, &[]).unwrap();
    assert!(matches!(v.output, OutputKind::Json { .. }));
    assert_eq!(v.length, None);
    let ok = v.judge(None, &[], r#"{"item":"plum","qty":9,"status":"open"}"#);
    assert!(ok.passed, "{:?}", ok.failures);
    let bad = v.judge(None, &[], r#"{"item":"plum","qty":"9","status":"lost"}"#);
    assert!(!bad.passed);
    assert_eq!(bad.failures.len(), 2, "{:?}", bad.failures);
    let fenced = v.judge(None, &[], "```json\n{}\n```");
    assert!(
        fenced.failures[0].starts_with("not JSON"),
        "{:?}",
        fenced.failures
    );
    // Key order does not matter for the normalized tier.
    let r = v.judge(
        Some(examples[0].output.as_deref().unwrap()),
        &[],
        r#"{"status":"open","qty":2,"item":"apple"}"#,
    );
    assert_eq!((r.tier, r.similarity), (MatchTier::Normalized, 1.0));
    let text = v.explain();
    assert!(
        text.contains("$.status: is string; is one of \"closed\", \"open\""),
        "{text}"
    );
    assert!(text.contains("has keys item, qty, status"), "{text}");
}

#[test]
fn infers_labels_formats_and_text() {
    let labels: Vec<Example> = ["pos", "neg", "pos", "neg", "neutral", "pos"]
        .iter()
        .enumerate()
        .map(|(i, o)| ex(&i.to_string(), o))
        .collect();
    let v = Verifier::infer(&labels, &[]).unwrap();
    assert_eq!(
        v.output,
        OutputKind::Label {
            labels: s(&["neg", "neutral", "pos"])
        }
    );
    assert!(v.judge(None, &[], " pos\n").passed);
    assert!(!v.judge(None, &[], "positive").passed);

    let dates: Vec<Example> = ["2024-01-01", "2023-05-06", "1999-12-31"]
        .iter()
        .enumerate()
        .map(|(i, o)| ex(&i.to_string(), o))
        .collect();
    let v = Verifier::infer(&dates, &[]).unwrap();
    assert_eq!(
        v.output,
        OutputKind::Format {
            format: ValueFormat::String(Format::Date)
        }
    );
    assert!(v.judge(None, &[], "2020-02-02").passed);
    assert_eq!(Verifier::from_json(&v.to_json()).unwrap(), v);
    assert!(String::from_utf8(v.to_json())
        .unwrap()
        .contains(r#""format": "date""#));
    assert!(!v.judge(None, &[], "Feb 2").passed);

    let ids: Vec<Example> = ["INV-001", "INV-77", "PO_3"]
        .iter()
        .enumerate()
        .map(|(i, o)| ex(&i.to_string(), o))
        .collect();
    assert_eq!(
        Verifier::infer(&ids, &[]).unwrap().output,
        OutputKind::Format {
            format: ValueFormat::Id
        }
    );
    let nums: Vec<Example> = ["1.5", "-2", "30"]
        .iter()
        .enumerate()
        .map(|(i, o)| ex(&i.to_string(), o))
        .collect();
    assert_eq!(
        Verifier::infer(&nums, &[]).unwrap().output,
        OutputKind::Format {
            format: ValueFormat::Number
        }
    );

    let text: Vec<Example> = ["The cat sat.", "A dog ran far away.", "Birds fly."]
        .iter()
        .enumerate()
        .map(|(i, o)| ex(&i.to_string(), o))
        .collect();
    let v = Verifier::infer(&text, &[]).unwrap();
    assert_eq!(v.output, OutputKind::Text);
    assert_eq!(
        v.length,
        Some(LengthBounds {
            min: 5,
            max: 19 * 2 + 16
        })
    );
    let long = "x".repeat(60);
    assert!(v.judge(None, &[], &long).failures[0].contains("outside [5, 54]"));
}

#[test]
fn test_assertions_are_kept_per_input_and_applied() {
    let a: Assertion = serde_json::from_value(json!({"type":"icontains","value":"Paris"})).unwrap();
    let test = Example {
        input: Input::Text("capital of France?".into()),
        output: None,
        assertions: vec![a.clone()],
        origin: None,
    };
    let v = Verifier::infer(
        &[ex("q", "The answer is Rome.")],
        std::slice::from_ref(&test),
    )
    .unwrap();
    assert_eq!(v.cases[&test.input.digest()], vec![a]);
    // The assertion applies to that test's input only.
    let bare = Example {
        assertions: vec![],
        ..test.clone()
    };
    assert!(!v.judge_example(&bare, "It is Lyon.").passed);
    assert!(v.judge_example(&bare, "It is paris.").passed);
    let other = Example {
        output: None,
        ..ex("other", "")
    };
    assert!(v.judge_example(&other, "It is Lyon.").passed);
    assert!(v
        .explain()
        .contains("the output must contain \"Paris\" (ignoring case)"));
    // Round trip through verifier.json.
    let back = Verifier::from_json(&v.to_json()).unwrap();
    assert_eq!(back, v);
}

#[test]
fn verifier_json_versions_are_checked() {
    let v = Verifier::infer(&[ex("a", "b")], &[]).unwrap();
    let mut j: Value = serde_json::from_slice(&v.to_json()).unwrap();
    j["version"] = json!(3);
    let e = Verifier::from_json(j.to_string().as_bytes()).unwrap_err();
    assert!(matches!(e, VerifierError::Version { found: 3 }), "{e}");
    assert!(e.to_string().contains("upgrade kolm"), "{e}");
    assert!(Verifier::from_json(b"{").is_err());
    assert!(matches!(
        Verifier::infer(&[], &[]),
        Err(VerifierError::NoEvidence)
    ));
}

#[test]
fn pick_orders_gates_exact_normalized_similar_length_hash() {
    let examples = vec![
        ex("a", "the quick brown fox"),
        ex("b", "a lazy dog sleeps"),
        ex("c", "x y z"),
    ];
    let v = Verifier::infer(&examples, &[]).unwrap();
    let e = &examples[0];
    let cands = s(&[
        "q",                    // fails the length gate (min 2)? no: "q" is 1 char < 2
        "The  Quick brown fox", // normalized
        "the quick brown fox",  // exact
        "the quick red fox",    // similar
    ]);
    let p = v.pick(e, &cands);
    assert_eq!(p.winner, Some(2));
    assert!(
        p.reason.contains("matches the reference exactly"),
        "{}",
        p.reason
    );
    assert_eq!(
        p.ranked.iter().map(|r| r.index).collect::<Vec<_>>(),
        [2, 1, 3, 0]
    );
    assert!(!p.ranked[3].verdict.passed);

    let p = v.pick(e, &s(&["the quick red fox", "the slow brown fox jumps"]));
    assert_eq!(p.winner, Some(0));
    assert!(
        p.reason.contains("most similar to the reference"),
        "{}",
        p.reason
    );

    // Answers far from the reference fail (ROUGE-L below the threshold).
    let p = v.pick(e, &s(&["quick fox brown the", "brown fox"]));
    assert_eq!(p.winner, Some(1), "{p:?}");
    assert!(!p.ranked[1].verdict.passed);
    // Equal consensus (no reference): shorter wins; equal length: smaller
    // hash wins.
    let e = &Example {
        output: None,
        ..ex("free", "")
    };
    let p2 = v.pick(e, &s(&["aaaa", "bbbb"]));
    let want = if sha256_hex(b"aaaa") < sha256_hex(b"bbbb") {
        0
    } else {
        1
    };
    assert_eq!(p2.winner, Some(want));
    assert!(p2.reason.contains("smaller SHA-256"), "{}", p2.reason);
    let p3 = v.pick(e, &s(&["zzzzzz", "zzz"]));
    assert_eq!(p3.winner, Some(1));
    assert!(p3.reason.contains("shorter"), "{}", p3.reason);

    let none = v.pick(e, &s(&["q"]));
    assert_eq!(none.winner, None);
    assert!(
        none.reason.contains("none of 1 candidates passed"),
        "{}",
        none.reason
    );
}

#[test]
fn pick_without_reference_uses_consensus() {
    let v = Verifier {
        length: None,
        ..Verifier::infer(&[ex("a", "abc")], &[]).unwrap()
    };
    let q = Example {
        output: None,
        ..ex("q", "")
    };
    let p = v.pick(
        &q,
        &s(&[
            "rome maybe",
            "the capital is paris",
            "the capital is paris, i think",
            "paris",
        ]),
    );
    // "the capital is paris" shares the most with the others.
    assert_eq!(p.winner, Some(1), "{p:?}");
    assert!(p.reason.contains("consensus"), "{}", p.reason);
    assert_eq!(p.ranked[3].index, 0);
}

fn arb_output() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{1,30}",
        (any::<u8>(), "[a-c]{1,3}").prop_map(|(n, s)| format!(r#"{{"n":{n},"s":"{s}"}}"#)),
        prop::sample::select(vec!["yes".to_string(), "no".to_string()]),
    ]
}

proptest! {
    #[test]
    fn inferred_verifier_accepts_its_own_outputs(outs in prop::collection::vec(arb_output(), 1..12)) {
        let examples: Vec<Example> = outs.iter().enumerate().map(|(i, o)| ex(&i.to_string(), o)).collect();
        let v = Verifier::infer(&examples, &[]).unwrap();
        for e in &examples {
            let verdict = v.judge_example(e, e.output.as_deref().unwrap());
            prop_assert!(verdict.passed, "{:?} on {:?}", verdict.failures, e.output);
            prop_assert_eq!(verdict.tier, MatchTier::Exact);
        }
        prop_assert_eq!(Verifier::from_json(&v.to_json()).unwrap(), v);
    }

    #[test]
    fn pick_is_independent_of_candidate_order(cands in prop::collection::vec("[a-d ]{0,8}", 1..6), rot in 0usize..6) {
        let v = Verifier::infer(&[ex("a", "ab cd"), ex("b", "dd a")], &[]).unwrap();
        let e = ex("a", "ab cd");
        let p1 = v.pick(&e, &cands);
        let mut rotated = cands.clone();
        rotated.rotate_left(rot % cands.len());
        let p2 = v.pick(&e, &rotated);
        prop_assert_eq!(p1.winner.map(|i| &cands[i]), p2.winner.map(|i| &rotated[i]));
        prop_assert_eq!(v.pick(&e, &cands), p1);
    }
}

#[test]
fn explain_reads_as_rules() {
    let examples: Vec<Example> = [
        r#"{"item":"apple","qty":2,"unit":"kg"}"#,
        r#"{"item":"pear","qty":1,"unit":"kg"}"#,
        r#"{"item":"fig","qty":5,"unit":"box"}"#,
        r#"{"item":"kiwi","qty":3,"unit":"box","note":"ripe"}"#,
    ]
    .iter()
    .enumerate()
    .map(|(i, o)| ex(&format!("order {i}"), o))
    .collect();
    let test = Example {
        input: Input::Text("ten figs".into()),
        output: None,
        assertions: vec![serde_json::from_value(json!({"type":"contains","value":"fig"})).unwrap()],
        origin: None,
    };
    let v = Verifier::infer(&examples, std::slice::from_ref(&test)).unwrap();
    let text = v.explain();
    println!("{text}");
    let want = format!(
        "verifier v2 (inferred from 4 output(s))
Hard gates (every answer must pass all):
  - the output is JSON that conforms to:
      $: is object; has keys item, qty, unit; has no other keys
        $.item: is string
        $.note: is string
        $.qty: is integer
        $.unit: is string; is one of \"box\", \"kg\"
  - 1 test(s) carry their own assertions:
    test {}:
      the output must contain \"fig\"
Correctness (where the test has a reference answer):
  - the output is the same JSON value as the reference, whatever the key order, whitespace or number spelling
  - without a reference an answer passes on the gates alone and is counted apart, never as accuracy
Ranking among answers that pass:
  1. exact match with the reference
  2. match after normalization (same JSON value whatever the key order, or same text ignoring case and whitespace)
  3. higher similarity to the reference (ROUGE-L F1 over words and symbols); with no reference, to the other answers
  4. shorter, then smaller SHA-256",
        &test.input.digest()[..12]
    );
    assert_eq!(text, want);
}

proptest! {
    #[test]
    fn not_is_the_exact_complement(kind in prop::sample::select(vec![
        "equals", "contains", "icontains", "starts-with", "regex", "min-length", "max-length",
    ]), value in "[a-cA-C]{0,3}", n in 0u64..6, output in "[a-cA-C{}\"]{0,6}") {
        let v = match kind {
            "min-length" | "max-length" => json!(n),
            "regex" => json!(regex::escape(&value)),
            _ => json!(value),
        };
        let pos: Assertion = serde_json::from_value(json!({"type": kind, "value": v})).unwrap();
        let neg: Assertion = serde_json::from_value(json!({"type": format!("not-{kind}"), "value": v})).unwrap();
        prop_assert_ne!(pos.check(&output).is_ok(), neg.check(&output).is_ok());
    }
}

fn orders() -> Vec<Example> {
    [
        r#"{"date":"2024-03-01","time":"09:15","who":"Ana"}"#,
        r#"{"date":"2024-03-02","time":"13:45","who":"Bo"}"#,
        r#"{"date":"2024-03-03","time":"15:30","who":"Cy"}"#,
    ]
    .iter()
    .enumerate()
    .map(|(i, o)| ex(&format!("meeting {i}"), o))
    .collect()
}

#[test]
fn a_schema_valid_answer_with_one_wrong_value_fails() {
    let examples = orders();
    let v = Verifier::infer(&examples, &[]).unwrap();
    let wrong = r#"{"date":"2024-03-01","time":"10:15","who":"Ana"}"#;
    // The shape alone passes: the gates are necessary, not sufficient.
    assert!(v.judge(None, &[], wrong).passed);
    let verdict = v.judge_example(&examples[0], wrong);
    assert!(!verdict.passed, "{verdict:?}");
    assert!(verdict.checked);
    assert_eq!(verdict.fields_wrong, ["$.time"]);
    assert!(
        verdict.failures[0].contains(r#"$.time is "10:15" where the reference has "09:15""#),
        "{:?}",
        verdict.failures
    );
    // Key order, whitespace and number spelling are not differences.
    let right = "{ \"who\": \"Ana\",\n \"time\": \"09:15\", \"date\": \"2024-03-01\" }";
    let verdict = v.judge_example(&examples[0], right);
    assert!(verdict.passed, "{verdict:?}");
    assert_eq!(verdict.tier, MatchTier::Normalized);
    assert!(json_equal(
        &json!({"a": 2, "b": [1.0]}),
        &json!({"b": [1], "a": 2.0})
    ));
    assert!(!json_equal(&json!({"a": 2}), &json!({"a": 2, "b": null})));
    // A missing key and an extra key are both wrong fields; not JSON at all
    // is wrong everywhere.
    let verdict = v.judge_example(
        &examples[0],
        r#"{"date":"2024-03-01","time":"09:15","whom":"Ana"}"#,
    );
    assert_eq!(verdict.fields_wrong, ["$.who", "$.whom"]);
    let verdict = v.judge_example(&examples[0], "Ana at 09:15");
    assert_eq!(verdict.fields_wrong, ["$"]);
    assert!(!verdict.passed);
    // Without a reference the verdict passes on shape and says so.
    let bare = Example {
        output: None,
        ..ex("meeting x", "")
    };
    let verdict = v.judge_example(&bare, wrong);
    assert!(verdict.passed && !verdict.checked, "{verdict:?}");
}

#[test]
fn labels_formats_and_text_match_by_their_kind() {
    let labels: Vec<Example> = ["pos", "neg", "pos", "neg"]
        .iter()
        .enumerate()
        .map(|(i, o)| ex(&i.to_string(), o))
        .collect();
    let v = Verifier::infer(&labels, &[]).unwrap();
    assert!(v.judge(Some("pos"), &[], " pos\n").passed);
    let other = v.judge(Some("pos"), &[], "neg");
    assert!(
        !other.passed && other.failures[0].contains("label \"neg\""),
        "{other:?}"
    );

    let nums: Vec<Example> = ["1.5", "-2", "30"]
        .iter()
        .enumerate()
        .map(|(i, o)| ex(&i.to_string(), o))
        .collect();
    let v = Verifier::infer(&nums, &[]).unwrap();
    assert!(v.judge(Some("30"), &[], "30.0").passed);
    assert!(v.judge(Some("-2"), &[], "-2.00").passed);
    assert!(!v.judge(Some("30"), &[], "31").passed);

    let emails: Vec<Example> = ["ana@x.org", "bo@y.com"]
        .iter()
        .enumerate()
        .map(|(i, o)| ex(&i.to_string(), o))
        .collect();
    let v = Verifier::infer(&emails, &[]).unwrap();
    assert!(v.judge(Some("ana@x.org"), &[], "Ana@X.org").passed);
    assert!(!v.judge(Some("ana@x.org"), &[], "bo@y.com").passed);

    // Free text: the threshold sits above the closest pair of references,
    // so another input's reference never passes.
    let text: Vec<Example> = [
        "The meeting with Ana is on Monday at nine.",
        "The meeting with Bo is on Tuesday at ten.",
        "Lunch is cancelled today.",
    ]
    .iter()
    .enumerate()
    .map(|(i, o)| ex(&i.to_string(), o))
    .collect();
    let v = Verifier::infer(&text, &[]).unwrap();
    let closest = similarity::rouge_l(
        text[0].output.as_deref().unwrap(),
        text[1].output.as_deref().unwrap(),
    );
    assert!((v.similarity_threshold() - (closest + SIMILARITY_MARGIN)).abs() < 1e-12);
    assert!(
        !v.judge_example(&text[0], text[1].output.as_deref().unwrap())
            .passed
    );
    assert!(
        v.judge_example(&text[0], "the meeting with ana is on monday at nine")
            .passed
    );
    assert!(
        v.judge_example(&text[0], "The meeting with Ana is on Monday at nine sharp.")
            .passed
    );
    // The task file's threshold wins.
    let strict = v.clone().with_similarity_min(Some(1.0));
    assert!(
        !strict
            .judge_example(&text[0], "The meeting with Ana is on Monday at nine sharp.")
            .passed
    );
    assert_eq!(Verifier::from_json(&strict.to_json()).unwrap(), strict);
}

#[test]
fn a_version_1_verifier_still_reads_and_says_it_judged_shape_only() {
    let v = Verifier::infer(&orders(), &[]).unwrap();
    assert!(!v.judged_by_shape_only());
    let mut j: Value = serde_json::from_slice(&v.to_json()).unwrap();
    j["version"] = json!(1);
    let old = Verifier::from_json(j.to_string().as_bytes()).unwrap();
    assert!(old.judged_by_shape_only());
    assert!(
        old.explain().contains("Judged by shape only"),
        "{}",
        old.explain()
    );
}

#[test]
fn shape_grammars_follow_the_output_kind() {
    let v = Verifier::infer(&orders(), &[]).unwrap();
    match v.shape_grammar() {
        Some(ShapeGrammar::JsonSchema(s)) => {
            assert_eq!(s["required"], json!(["date", "time", "who"]), "{s}")
        }
        other => panic!("{other:?}"),
    }
    let labels: Vec<Example> = ["a.b", "c", "a.b", "c"]
        .iter()
        .enumerate()
        .map(|(i, o)| ex(&i.to_string(), o))
        .collect();
    assert_eq!(
        Verifier::infer(&labels, &[]).unwrap().shape_grammar(),
        Some(ShapeGrammar::Regex(r"(a\.b|c)".into()))
    );
    let text: Vec<Example> = ["The cat sat.", "A dog ran far away.", "Birds fly."]
        .iter()
        .enumerate()
        .map(|(i, o)| ex(&i.to_string(), o))
        .collect();
    assert_eq!(Verifier::infer(&text, &[]).unwrap().shape_grammar(), None);
}

fn arb_record() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["09:15", "10:15", "13:45", "1:45"]),
        0u8..4,
        prop::option::of(prop::sample::select(vec!["Ana", "Bo"])),
    )
        .prop_map(|(time, n, who)| {
            let mut v = json!({"time": time, "n": n});
            if let Some(w) = who {
                v["who"] = json!(w);
            }
            v
        })
}

proptest! {
    /// For JSON tasks, a pass implies canonical equality with the
    /// reference (key order shuffled, an integer spelled as a float).
    #[test]
    fn a_json_pass_implies_canonical_equality(reference in arb_record(), candidate in arb_record(), floaty in any::<bool>(), reversed in any::<bool>()) {
        let examples: Vec<Example> = [
            r#"{"time":"09:15","n":1,"who":"Ana"}"#,
            r#"{"time":"13:45","n":2}"#,
        ]
        .iter()
        .enumerate()
        .map(|(i, o)| ex(&i.to_string(), o))
        .collect();
        let v = Verifier::infer(&examples, &[]).unwrap();
        let mut text = candidate.to_string();
        if floaty {
            text = text.replace(&format!("\"n\":{}", candidate["n"]), &format!("\"n\":{}.0", candidate["n"]));
        }
        if reversed {
            let map = candidate.as_object().unwrap();
            let parts: Vec<String> = map.iter().rev().map(|(k, v)| format!("{}:{}", json!(k), v)).collect();
            text = format!("{{{}}}", parts.join(","));
            if floaty {
                text = text.replace(&format!("\"n\":{}", candidate["n"]), &format!("\"n\":{}.0", candidate["n"]));
            }
        }
        let verdict = v.judge(Some(&reference.to_string()), &[], &text);
        let equal = crate::digest::canonical_json(&reference) == crate::digest::canonical_json(&candidate);
        prop_assert_eq!(verdict.passed, equal, "{:?} vs {}", verdict, text);
        if !equal {
            prop_assert!(!verdict.fields_wrong.is_empty());
        }
    }
}
