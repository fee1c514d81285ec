//! Property tests: manifests survive a JSON round trip unchanged, and
//! artifacts with arbitrary optional components survive pack + verify.

mod support;

use std::collections::BTreeMap;

use kolm_artifact::manifest::{
    BaseModel, EntryRecord, KScore, Predicate, ReceiptsHead, Statement, Teacher,
};
use kolm_artifact::names::{self, Role};
use kolm_artifact::{pack, verify, Component, NoProgress, PackSpec};
use proptest::prelude::*;
use support::*;

fn hex64() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<u8>(), 32).prop_map(hex::encode)
}

fn entry(name: &'static str, role: Role) -> impl Strategy<Value = EntryRecord> {
    (0..=role.max_size(), hex64()).prop_map(move |(size, sha256)| EntryRecord {
        name: name.into(),
        role,
        size,
        media_type: role.media_type().into(),
        sha256,
    })
}

fn unit() -> impl Strategy<Value = f64> {
    0.0f64..=1.0
}

fn predicate() -> impl Strategy<Value = Predicate> {
    let entries = (
        entry(names::BASE, Role::Base),
        proptest::option::of(entry(names::ADAPTER, Role::Adapter)),
        proptest::option::of(entry(names::VERIFIER, Role::Verifier)),
        proptest::option::of((entry(names::RECEIPTS, Role::Receipts), hex64(), 1u64..100)),
    );
    let k = proptest::option::of((unit(), unit(), unit(), unit(), unit(), unit()).prop_map(
        |(value, accuracy, size, latency, cost, coverage)| KScore {
            value,
            accuracy,
            size,
            latency,
            cost,
            coverage,
        },
    ));
    (
        "[a-z0-9][a-z0-9._-]{0,20}",
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(-[a-z]{1,5})?",
        proptest::option::of(".{0,200}"),
        (
            "[a-z0-9 ]{0,30}",
            "[a-z0-9]{1,10}",
            "[A-Z0-9_]{1,8}",
            any::<u64>(),
        ),
        entries,
        k,
        proptest::option::of(("[a-z]{1,10}", "[a-z0-9.-]{1,20}")),
        proptest::option::of(proptest::collection::btree_map(
            "[a-z_]{1,8}",
            any::<i64>(),
            0..4,
        )),
        0u32..86_400,
    )
        .prop_map(
            |(name, version, task, base, entries, k_score, teacher, compile, secs)| {
                let (b, adapter, verifier, receipts) = entries;
                let mut list = vec![b];
                list.extend(adapter);
                list.extend(verifier);
                let receipts_head = match receipts {
                    Some((r, head, length)) => {
                        list.push(r);
                        ReceiptsHead {
                            length,
                            head: Some(format!("sha256:{head}")),
                        }
                    }
                    None => ReceiptsHead {
                        length: 0,
                        head: None,
                    },
                };
                Predicate {
                    format_version: 1,
                    name,
                    version,
                    created: format!(
                        "2026-11-23T{:02}:{:02}:{:02}Z",
                        secs / 3600,
                        secs / 60 % 60,
                        secs % 60
                    ),
                    task,
                    base: BaseModel {
                        name: (!base.0.is_empty()).then_some(base.0),
                        architecture: base.1,
                        quantization: base.2,
                        parameter_count: base.3,
                    },
                    entries: list,
                    k_score,
                    teacher: teacher.map(|(provider, model)| Teacher { provider, model }),
                    compile: compile.map(|m| {
                        m.into_iter()
                            .map(|(k, v)| (k, serde_json::Value::from(v)))
                            .collect::<BTreeMap<_, _>>()
                    }),
                    receipts: receipts_head,
                }
            },
        )
}

proptest! {
    #[test]
    fn statements_round_trip_through_json(p in predicate()) {
        let statement = Statement::new(p);
        statement.validate().unwrap();
        let bytes = serde_json::to_vec(&statement).unwrap();
        let parsed = Statement::parse(&bytes).unwrap();
        prop_assert_eq!(parsed, statement);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn artifacts_round_trip_through_pack_and_verify(
        verifier in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..9000)),
        embedder in proptest::collection::btree_map("[a-z0-9]{1,8}\\.bin", proptest::collection::vec(any::<u8>(), 0..5000), 0..3),
        seed in any::<u8>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = PackSpec::new("prop", "1.0.0", tiny_gguf(dir.path(), "base.gguf", seed));
        if let Some(v) = &verifier {
            spec.components.push(Component::new(names::VERIFIER, write_file(dir.path(), "v.json", v)));
        }
        for (file, data) in &embedder {
            let name = format!("{}{file}", names::EMBEDDER_DIR);
            spec.components.push(Component::new(&name, write_file(dir.path(), file, data)));
        }
        let out = dir.path().join("p.kolm");
        let report = pack(spec, &[&test_key()], &receipt_key(), &out, &NoProgress).unwrap();
        let verified = verify(&out, &trusting(&test_key()), &NoProgress).unwrap();
        prop_assert_eq!(verified.statement(), &report.statement);
        prop_assert_eq!(verified.entries().len(), 2 + usize::from(verifier.is_some()) + embedder.len());
        for e in verified.entries() {
            prop_assert_eq!(e.data_offset % 4096, 0);
        }
    }
}
