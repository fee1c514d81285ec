use super::*;
use std::path::PathBuf;

// ---------------------------------------------------------------------------
// real files from scripts/fixtures.sh
// ---------------------------------------------------------------------------

/// Path of a fixture file; panics (does not skip) when it is absent.
fn fixture(name: &str) -> PathBuf {
    kolm_fixtures::path(name)
}

/// Reads the header of a real file and checks that every tensor's size, as
/// computed from the ggml type table, fills exactly the space up to the next
/// aligned tensor: this validates block sizes against real data.
fn read_and_check_layout(path: &Path) -> GgufSummary {
    let mut tensors = Vec::new();
    let summary = read_header(File::open(path).unwrap(), &mut |t| tensors.push(t.clone())).unwrap();
    assert_eq!(tensors.len() as u64, summary.tensor_count);
    tensors.sort_by_key(|t| t.offset);
    let align = summary.alignment;
    for pair in tensors.windows(2) {
        let size = tensor_bytes(pair[0].ggml_type, pair[0].dims()).unwrap();
        assert_eq!(
            (pair[0].offset + size).next_multiple_of(align),
            pair[1].offset,
            "tensor of type {} dims {:?}",
            pair[0].ggml_type,
            pair[0].dims()
        );
    }
    let last = tensors.last().unwrap();
    let end = summary.tensor_data_offset
        + last.offset
        + tensor_bytes(last.ggml_type, last.dims()).unwrap();
    let file_len = std::fs::metadata(path).unwrap().len();
    assert!(
        end <= file_len && file_len - end < align,
        "end {end}, file {file_len}"
    );
    summary
}

#[test]
fn smollm2_header() {
    let s = read_and_check_layout(&fixture("SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert_eq!(s.version, 3);
    assert_eq!(s.architecture, "llama");
    assert_eq!(s.name.as_deref(), Some("Smollm2 135M 8k Lc100K Mix1 Ep2"));
    assert_eq!(s.general_type.as_deref(), Some("model"));
    assert_eq!(s.file_type, Some(3));
    assert_eq!(s.quantization, "Q4_1");
    assert_eq!(s.tensor_count, 272);
    // 134,515,008 by an independent count; the model card says 135M.
    assert_eq!(s.parameter_count, 134_515_008);
    assert_eq!(s.context_length, Some(8192));
    assert!(s.has_chat_template);
    assert_eq!(s.alignment, 32);
    assert_eq!(s.tensor_data_offset, 1_785_664);
    assert_eq!(
        read_summary_file(&fixture("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap(),
        s
    );
}

#[test]
fn gemma3_header() {
    let s = read_and_check_layout(&fixture("gemma-3-270m-q4_k_m.gguf"));
    assert_eq!(s.version, 3);
    assert_eq!(s.architecture, "gemma3");
    assert_eq!(s.name.as_deref(), Some("Gemma 3 270m"));
    assert_eq!(s.general_type.as_deref(), Some("model"));
    assert_eq!(s.file_type, Some(15));
    assert_eq!(s.quantization, "Q4_K_M");
    assert_eq!(s.tensor_count, 236);
    assert_eq!(s.parameter_count, 268_098_176);
    assert_eq!(s.context_length, Some(32768));
    assert!(!s.has_chat_template);
    assert_eq!(s.alignment, 32);
}

// ---------------------------------------------------------------------------
// writer round trip
// ---------------------------------------------------------------------------

fn zeros(_: usize, len: u64, out: &mut dyn Write) -> io::Result<()> {
    io::copy(&mut io::repeat(0).take(len), out).map(|_| ())
}

fn minimal(tensors: &[(&str, &[u64], u32)]) -> Vec<u8> {
    let mut buf = Vec::new();
    let n = write_minimal(&mut buf, "llama", "tiny test", tensors, zeros).unwrap();
    assert_eq!(n, buf.len() as u64);
    buf
}

#[test]
fn writer_round_trip() {
    let tensors: &[(&str, &[u64], u32)] = &[
        ("token_embd.weight", &[64, 10], 1),     // F16, 1280 bytes
        ("blk.0.attn_q.weight", &[256, 4], 12),  // Q4_K, 576 bytes
        ("output_norm.weight", &[64], 0),        // F32, 256 bytes
        ("blk.0.ffn.weight", &[32, 3, 2, 1], 3), // Q4_1, 4 dims
    ];
    let buf = minimal(tensors);
    let mut infos = Vec::new();
    let s = read_header(buf.as_slice(), &mut |t| infos.push(t.clone())).unwrap();
    assert_eq!(s.version, 3);
    assert_eq!(s.architecture, "llama");
    assert_eq!(s.name.as_deref(), Some("tiny test"));
    assert_eq!(s.general_type, None);
    assert_eq!(s.file_type, None);
    assert_eq!(s.quantization, "F16", "dominant type by bytes");
    assert_eq!(s.tensor_count, 4);
    assert_eq!(s.parameter_count, 640 + 1024 + 64 + 192);
    assert_eq!(s.context_length, None);
    assert!(!s.has_chat_template);
    assert_eq!(s.alignment, 32);
    assert_eq!(s.tensor_data_offset % 32, 0);
    assert_eq!(
        infos.iter().map(|t| t.offset).collect::<Vec<_>>(),
        [0, 1280, 1856, 2112]
    );
    assert_eq!(infos[3].dims(), &[32, 3, 2, 1]);
    let q41 = tensor_bytes(3, &[32, 3, 2, 1]).unwrap();
    assert_eq!(buf.len() as u64, s.tensor_data_offset + 2112 + q41);
}

#[test]
fn writer_streams_caller_data() {
    let mut buf = Vec::new();
    write_minimal(
        &mut buf,
        "gemma3",
        "x",
        &[("a", &[3], 0), ("b", &[2], 0)],
        |i, len, out| out.write_all(&vec![i as u8 + 1; len as usize]),
    )
    .unwrap();
    let s = read_summary(buf.as_slice()).unwrap();
    let data = &buf[s.tensor_data_offset as usize..];
    assert_eq!(&data[..12], &[1; 12]);
    assert_eq!(
        &data[12..32],
        &[0; 20],
        "padding to the next aligned tensor"
    );
    assert_eq!(&data[32..], &[2; 8]);
    assert_eq!(s.quantization, "F32");
}

#[test]
fn writer_rejects_bad_input() {
    let mut buf = Vec::new();
    let e = write_minimal(&mut buf, "a", "b", &[("t", &[33], 2)], zeros).unwrap_err();
    assert_eq!(
        e.kind(),
        io::ErrorKind::InvalidInput,
        "33 is not a whole Q4_0 block"
    );
    let e = write_minimal(&mut buf, "a", "b", &[("t", &[4], 999)], zeros).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    let e = write_minimal(&mut buf, "a", "b", &[("t", &[4], 0)], |_, _, out| {
        out.write_all(&[0; 3])
    })
    .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "short fill");
}

#[test]
fn file_type_wins_over_dominant_type() {
    let mut h = Header::new(1, 2);
    h.kv_str("general.architecture", "llama");
    h.kv_u32("general.file_type", 15);
    h.tensor("w", &[256], 0);
    assert_eq!(read(&h.bytes).unwrap().quantization, "Q4_K_M");

    // An unknown file type falls back to the dominant tensor type.
    let mut h = Header::new(1, 2);
    h.kv_str("general.architecture", "llama");
    h.kv_u32("general.file_type", 1024);
    h.tensor("w", &[256], 14);
    let s = read(&h.bytes).unwrap();
    assert_eq!((s.file_type, s.quantization.as_str()), (Some(1024), "Q6_K"));
}

#[test]
fn context_length_may_precede_architecture_and_v2_is_read() {
    let mut h = Header::with_version(2, 0, 5);
    h.kv_u64("other.context_length", 1);
    h.kv_u32("qwen2.context_length", 4096);
    h.kv_str("general.architecture", "qwen2");
    h.kv_str("general.type", "adapter");
    h.kv_u32("general.alignment", 64);
    let s = read(&h.bytes).unwrap();
    assert_eq!(s.version, 2);
    assert_eq!(s.context_length, Some(4096));
    assert_eq!(s.general_type.as_deref(), Some("adapter"));
    assert_eq!(s.alignment, 64);
    assert_eq!(
        s.tensor_data_offset,
        (h.bytes.len() as u64).next_multiple_of(64)
    );
    assert_eq!(s.quantization, "unknown", "no file type and no tensors");
}

#[test]
fn skips_arrays_of_every_type_including_nested() {
    let mut h = Header::new(0, 6);
    // 100k strings, like a tokenizer vocabulary.
    h.key("tokenizer.ggml.tokens");
    h.u32(vt::ARRAY);
    h.u32(vt::STRING);
    h.u64(100_000);
    for i in 0..100_000u32 {
        h.string(&format!("tok{i}"));
    }
    h.key("tokenizer.ggml.scores");
    h.u32(vt::ARRAY);
    h.u32(vt::F32);
    h.u64(3);
    h.raw(&[0; 12]);
    // [[1u8, 2u8], ["x"]]
    h.key("nested");
    h.u32(vt::ARRAY);
    h.u32(vt::ARRAY);
    h.u64(2);
    h.u32(vt::U8);
    h.u64(2);
    h.raw(&[1, 2]);
    h.u32(vt::STRING);
    h.u64(1);
    h.string("x");
    h.kv_str("general.architecture", "llama");
    h.key("f64");
    h.u32(vt::F64);
    h.raw(&[0; 8]);
    h.key("tokenizer.chat_template");
    h.u32(vt::STRING);
    h.string("{{ messages }}");
    let s = read(&h.bytes).unwrap();
    assert!(s.has_chat_template);
    assert_eq!(s.architecture, "llama");
}

// ---------------------------------------------------------------------------
// hostile input
// ---------------------------------------------------------------------------

/// A hand-built GGUF header, for inputs the writer would never produce.
struct Header {
    bytes: Vec<u8>,
}

impl Header {
    fn new(tensors: u64, kvs: u64) -> Self {
        Self::with_version(3, tensors, kvs)
    }
    fn with_version(version: u32, tensors: u64, kvs: u64) -> Self {
        let mut h = Header {
            bytes: b"GGUF".to_vec(),
        };
        h.u32(version);
        h.u64(tensors);
        h.u64(kvs);
        h
    }
    fn raw(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
    }
    fn u32(&mut self, v: u32) {
        self.raw(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.raw(&v.to_le_bytes());
    }
    fn string(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.raw(s.as_bytes());
    }
    fn key(&mut self, k: &str) {
        self.string(k);
    }
    fn kv_str(&mut self, k: &str, v: &str) {
        self.key(k);
        self.u32(vt::STRING);
        self.string(v);
    }
    fn kv_u32(&mut self, k: &str, v: u32) {
        self.key(k);
        self.u32(vt::U32);
        self.u32(v);
    }
    fn kv_u64(&mut self, k: &str, v: u64) {
        self.key(k);
        self.u32(vt::U64);
        self.u64(v);
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32) {
        self.string(name);
        self.u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty);
        self.u64(0);
    }
}

fn read(bytes: &[u8]) -> Result<GgufSummary, GgufError> {
    read_summary(bytes)
}

fn invalid_what(r: Result<GgufSummary, GgufError>) -> String {
    match r {
        Err(GgufError::Invalid { what }) => what,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn wrong_magic() {
    let mut buf = minimal(&[]);
    buf[..4].copy_from_slice(b"GGML");
    assert!(matches!(read(&buf), Err(GgufError::NotGguf { found }) if &found == b"GGML"));
    assert!(matches!(
        read(b"PK\x03\x04 a zip, not a model"),
        Err(GgufError::NotGguf { .. })
    ));
}

#[test]
fn unsupported_versions() {
    for v in [0, 1, 4, 0x0300_0000] {
        let h = Header::with_version(v, 0, 0);
        assert!(matches!(read(&h.bytes), Err(GgufError::UnsupportedVersion(x)) if x == v));
    }
}

#[test]
fn truncated_at_every_header_byte() {
    let buf = minimal(&[("a", &[32, 2], 8), ("b", &[4], 0)]);
    let header_len = read(&buf).unwrap().tensor_data_offset as usize;
    for cut in 0..header_len {
        match read(&buf[..cut]) {
            // Cutting inside the final padding loses nothing the reader needs.
            Ok(_) => assert!(cut >= header_len - 32, "cut {cut} read fine"),
            Err(GgufError::Truncated { offset, .. }) => assert!(offset <= cut as u64),
            Err(e) => panic!("cut at {cut}: expected Truncated, got {e:?}"),
        }
    }
    // The places a human would pick.
    for (cut, what) in [
        (0, "magic"),
        (6, "version"),
        (12, "tensor count"),
        (20, "metadata count"),
        (30, "metadata key"),
    ] {
        match read(&buf[..cut]) {
            Err(GgufError::Truncated { what: w, .. }) => assert_eq!(w, what, "cut {cut}"),
            other => panic!("cut {cut}: {other:?}"),
        }
    }
}

#[test]
fn truncated_inside_a_skipped_array() {
    let mut h = Header::new(0, 1);
    h.key("tokenizer.ggml.tokens");
    h.u32(vt::ARRAY);
    h.u32(vt::STRING);
    h.u64(50_000); // declares 50k strings, holds two
    h.string("a");
    h.string("b");
    assert!(matches!(
        read(&h.bytes),
        Err(GgufError::Truncated {
            what: "string value",
            ..
        })
    ));

    let mut h = Header::new(0, 1);
    h.key("tokenizer.ggml.scores");
    h.u32(vt::ARRAY);
    h.u32(vt::F32);
    h.u64(MAX_ARRAY_LEN); // 256 MiB of floats declared, none present
    assert!(matches!(
        read(&h.bytes),
        Err(GgufError::Truncated {
            what: "array elements",
            ..
        })
    ));
}

#[test]
fn absurd_array_count() {
    for elem in [vt::U8, vt::STRING, vt::ARRAY] {
        let mut h = Header::new(0, 1);
        h.key("tokenizer.ggml.tokens");
        h.u32(vt::ARRAY);
        h.u32(elem);
        h.u64(u64::MAX);
        assert!(
            matches!(
                read(&h.bytes),
                Err(GgufError::TooLarge {
                    value: u64::MAX,
                    limit: MAX_ARRAY_LEN,
                    ..
                })
            ),
            "element type {elem}"
        );
    }
}

#[test]
fn absurd_string_lengths() {
    // A key.
    let mut h = Header::new(0, 1);
    h.u64(1 << 40);
    assert!(matches!(
        read(&h.bytes),
        Err(GgufError::TooLarge {
            limit: MAX_KEY_LEN,
            ..
        })
    ));
    // A string value that is kept.
    let mut h = Header::new(0, 1);
    h.key("general.name");
    h.u32(vt::STRING);
    h.u64(u64::MAX);
    assert!(matches!(
        read(&h.bytes),
        Err(GgufError::TooLarge {
            limit: MAX_STRING_LEN,
            ..
        })
    ));
    // A string value that is skipped.
    let mut h = Header::new(0, 1);
    h.key("tokenizer.chat_template");
    h.u32(vt::STRING);
    h.u64(MAX_STRING_LEN + 1);
    assert!(matches!(
        read(&h.bytes),
        Err(GgufError::TooLarge {
            limit: MAX_STRING_LEN,
            ..
        })
    ));
    // A tensor name.
    let mut h = Header::new(1, 1);
    h.kv_str("general.architecture", "llama");
    h.u64(u64::MAX);
    assert!(matches!(
        read(&h.bytes),
        Err(GgufError::TooLarge {
            limit: MAX_KEY_LEN,
            ..
        })
    ));
    // A length under the bound that the input does not hold is a truncation,
    // and allocates only what arrives.
    let mut h = Header::new(0, 1);
    h.key("general.name");
    h.u32(vt::STRING);
    h.u64(MAX_STRING_LEN);
    h.raw(b"short");
    assert!(matches!(read(&h.bytes), Err(GgufError::Truncated { .. })));
}

#[test]
fn absurd_counts() {
    let h = Header::new(u64::MAX, 0);
    assert!(matches!(
        read(&h.bytes),
        Err(GgufError::TooLarge {
            limit: MAX_TENSOR_COUNT,
            ..
        })
    ));
    let h = Header::new(0, u64::MAX);
    assert!(matches!(
        read(&h.bytes),
        Err(GgufError::TooLarge {
            limit: MAX_KV_COUNT,
            ..
        })
    ));
}

#[test]
fn deeply_nested_arrays() {
    let mut h = Header::new(0, 1);
    h.key("deep");
    h.u32(vt::ARRAY);
    for _ in 0..10_000 {
        h.u32(vt::ARRAY);
        h.u64(1);
    }
    assert!(invalid_what(read(&h.bytes)).contains("nested"));
}

#[test]
fn invalid_headers() {
    // Unknown value type.
    let mut h = Header::new(0, 1);
    h.key("x");
    h.u32(13);
    assert!(invalid_what(read(&h.bytes)).contains("value type 13"));

    // Missing architecture.
    let mut h = Header::new(0, 1);
    h.kv_str("general.name", "x");
    assert!(invalid_what(read(&h.bytes)).contains("general.architecture is missing"));

    // Duplicate architecture.
    let mut h = Header::new(0, 2);
    h.kv_str("general.architecture", "llama");
    h.kv_str("general.architecture", "gemma3");
    assert!(invalid_what(read(&h.bytes)).contains("duplicate"));

    // Architecture of the wrong type.
    let mut h = Header::new(0, 1);
    h.kv_u32("general.architecture", 7);
    assert!(invalid_what(read(&h.bytes)).contains("expected a string"));

    // Architecture not UTF-8.
    let mut h = Header::new(0, 1);
    h.key("general.architecture");
    h.u32(vt::STRING);
    h.u64(2);
    h.raw(&[0xff, 0xfe]);
    assert!(invalid_what(read(&h.bytes)).contains("UTF-8"));

    // Bad alignments.
    for a in [0, 3, 48] {
        let mut h = Header::new(0, 2);
        h.kv_str("general.architecture", "llama");
        h.kv_u32("general.alignment", a);
        assert!(
            invalid_what(read(&h.bytes)).contains("alignment"),
            "alignment {a}"
        );
    }

    // Negative file type.
    let mut h = Header::new(0, 2);
    h.kv_str("general.architecture", "llama");
    h.key("general.file_type");
    h.u32(vt::I32);
    h.u32(-1i32 as u32);
    assert!(invalid_what(read(&h.bytes)).contains("negative"));

    // Too many dimensions.
    let mut h = Header::new(1, 1);
    h.kv_str("general.architecture", "llama");
    h.tensor("t", &[1, 1, 1, 1, 1], 0);
    assert!(invalid_what(read(&h.bytes)).contains("dimensions"));

    // Element count overflow.
    let mut h = Header::new(1, 1);
    h.kv_str("general.architecture", "llama");
    h.tensor("t", &[u64::MAX, 2], 0);
    assert!(invalid_what(read(&h.bytes)).contains("overflows"));

    // Parameter count overflow across tensors.
    let mut h = Header::new(5, 1);
    h.kv_str("general.architecture", "llama");
    for _ in 0..5 {
        h.tensor("t", &[1 << 31, 1 << 31], 0);
    }
    assert!(invalid_what(read(&h.bytes)).contains("overflows"));

    // First dimension not a whole number of blocks.
    let mut h = Header::new(1, 1);
    h.kv_str("general.architecture", "llama");
    h.tensor("t", &[100], 12);
    assert!(invalid_what(read(&h.bytes)).contains("block size"));

    // Misaligned tensor offset.
    let mut h = Header::new(1, 1);
    h.kv_str("general.architecture", "llama");
    h.string("t");
    h.u32(1);
    h.u64(4);
    h.u32(0);
    h.u64(7);
    assert!(invalid_what(read(&h.bytes)).contains("not a multiple"));
}

#[test]
fn unknown_tensor_types_are_counted_but_not_named() {
    let mut h = Header::new(2, 1);
    h.kv_str("general.architecture", "llama");
    h.tensor("new", &[1000, 1000], 77);
    h.tensor("old", &[4], 0);
    let s = read(&h.bytes).unwrap();
    assert_eq!(s.parameter_count, 1_000_004);
    assert_eq!(s.quantization, "F32");
}

#[test]
fn io_errors_pass_through() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }
    assert!(matches!(read_summary(Failing), Err(GgufError::Io(_))));
    assert!(matches!(
        read_summary_file(Path::new("/nonexistent/model.gguf")),
        Err(GgufError::Io(e)) if e.kind() == io::ErrorKind::NotFound
    ));
}

#[test]
fn type_tables() {
    assert_eq!(
        ggml_type_info(12).map(|t| (t.name, t.block_size, t.type_size)),
        Some(("Q4_K", 256, 144))
    );
    assert_eq!(ggml_type_info(4), None, "Q4_2 was removed");
    assert_eq!(file_type_name(15), Some("Q4_K_M"));
    assert_eq!(file_type_name(5), None);
    assert_eq!(tensor_bytes(8, &[64, 3]), Some(6 * 34));
    assert_eq!(tensor_bytes(8, &[65]), None);
    assert_eq!(tensor_bytes(0, &[u64::MAX, 2]), None);
    // Names are unique.
    for (i, a) in GGML_TYPES.iter().enumerate() {
        assert!(GGML_TYPES[i + 1..].iter().all(|b| a.0 != b.0 && a.1 != b.1));
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        let mut buf = Vec::new();
        write_minimal(
            &mut buf,
            "llama",
            "fuzz",
            &[("a", &[32, 2], 8), ("b", &[256], 12), ("c", &[4], 0)],
            zeros,
        )
        .unwrap();
        let header = read_summary(buf.as_slice()).unwrap().tensor_data_offset as usize;
        buf.truncate(header);
        buf
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any corruption of a valid header gives a result, never a panic.
        #[test]
        fn mutated_headers_never_panic(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut buf = sample();
            for (i, b) in edits {
                let i = i.index(buf.len());
                buf[i] = b;
            }
            let cut = cut.index(buf.len() + 1);
            let _ = read_summary(&buf[..cut]);
        }

        #[test]
        fn random_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = b"GGUF\x03\0\0\0".to_vec();
            buf.extend(tail);
            let _ = read_summary(buf.as_slice());
        }
    }
}
