//! GGUF header reading: the identity of a base model or adapter (architecture,
//! name, quantization, parameter count, context length) as recorded in an
//! artifact's manifest, read from the file's header without touching tensor
//! data. Also a minimal GGUF writer for tests and benchmarks.
//!
//! The reader treats its input as hostile: every length and count is checked
//! against a bound before it is used, metadata it does not need (tokenizer
//! arrays of 50k-250k strings) is skipped without being stored, and malformed
//! input gives a [`GgufError`], never a panic or an unbounded allocation.
//! Memory use is bounded by a few small strings plus [`MAX_STRING_LEN`].
//!
//! Format: GGUF v2 and v3, little-endian (llama.cpp's `gguf.cpp`): magic
//! `GGUF`, `u32` version, `u64` tensor count, `u64` metadata count, the
//! metadata key/value pairs, the tensor infos, padding to `general.alignment`,
//! then the tensor data.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The longest string value the reader keeps (`general.name` and friends).
pub const MAX_STRING_LEN: u64 = 16 << 20;
/// The longest metadata key or tensor name (GGUF caps keys at 65535 bytes).
pub const MAX_KEY_LEN: u64 = 65_535;
/// The most elements a metadata array may declare (tokenizer arrays hold
/// about 50k-260k entries).
pub const MAX_ARRAY_LEN: u64 = 1 << 26;
/// The most metadata key/value pairs a file may declare.
pub const MAX_KV_COUNT: u64 = 1 << 20;
/// The most tensors a file may declare.
pub const MAX_TENSOR_COUNT: u64 = 1 << 24;
/// The deepest nesting of arrays inside arrays.
pub const MAX_ARRAY_DEPTH: u32 = 8;
/// The most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// The alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

const MAGIC: [u8; 4] = *b"GGUF";

/// What a GGUF header says about the model in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GgufSummary {
    /// GGUF format version (2 or 3).
    pub version: u32,
    /// Number of tensors.
    pub tensor_count: u64,
    /// `general.name`.
    pub name: Option<String>,
    /// `general.architecture`, e.g. `llama`, `gemma3`.
    pub architecture: String,
    /// `general.type`: `model` or `adapter`.
    pub general_type: Option<String>,
    /// `general.file_type`, llama.cpp's `llama_ftype` number.
    pub file_type: Option<u32>,
    /// The quantization, e.g. `Q4_1`, `Q4_K_M`: the name of `general.file_type`
    /// in llama.cpp's `llama_ftype` table, else the ggml type holding the most
    /// tensor bytes, e.g. `F16`.
    pub quantization: String,
    /// Sum over tensors of the product of their dimensions.
    pub parameter_count: u64,
    /// `<architecture>.context_length`.
    pub context_length: Option<u64>,
    /// Whether `tokenizer.chat_template` is present.
    pub has_chat_template: bool,
    /// `general.alignment`, else 32.
    pub alignment: u64,
    /// Byte offset in the file where tensor data starts (after the header,
    /// padded to `alignment`). Tensor offsets are relative to it.
    pub tensor_data_offset: u64,
}

/// Why a GGUF header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file: it starts with {found:02x?}, expected \"GGUF\"")]
    NotGguf {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A version other than 2 or 3 (version 1 used 32-bit lengths; a
    /// big-endian file reads as a huge version number).
    #[error("unsupported GGUF version {0} (supported: 2 and 3, little-endian)")]
    UnsupportedVersion(u32),
    /// The input ended inside the header.
    #[error("GGUF header truncated: input ended while reading {what} at byte {offset}")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Its byte offset in the input.
        offset: u64,
    },
    /// A length or count over the reader's bound.
    #[error("GGUF header declares {what} of {value}, over the limit of {limit}")]
    TooLarge {
        /// What was counted.
        what: String,
        /// The declared value.
        value: u64,
        /// The bound it broke.
        limit: u64,
    },
    /// Well-formed bytes that break a GGUF rule.
    #[error("invalid GGUF header: {what}")]
    Invalid {
        /// The rule broken.
        what: String,
    },
    /// Reading the input failed.
    #[error("reading GGUF header: {0}")]
    Io(#[from] io::Error),
}

fn invalid(what: impl Into<String>) -> GgufError {
    GgufError::Invalid { what: what.into() }
}

// ---------------------------------------------------------------------------
// ggml types and llama.cpp file types
// ---------------------------------------------------------------------------

/// Storage layout of one ggml tensor type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlTypeInfo {
    /// ggml's `enum ggml_type` value.
    pub id: u32,
    /// The name llama.cpp prints (`ggml_type_name`, upper-cased), e.g. `Q4_K`.
    pub name: &'static str,
    /// Elements per block.
    pub block_size: u64,
    /// Bytes per block.
    pub type_size: u64,
}

/// (id, name, elements per block, bytes per block), from ggml's type traits.
const GGML_TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

/// The layout of ggml type `id`, or `None` for a type this reader does not know.
pub fn ggml_type_info(id: u32) -> Option<GgmlTypeInfo> {
    GGML_TYPES
        .iter()
        .find(|t| t.0 == id)
        .map(|&(id, name, block_size, type_size)| GgmlTypeInfo {
            id,
            name,
            block_size,
            type_size,
        })
}

/// Bytes of tensor data for a tensor of `ggml_type` with `dims`, or `None`
/// when the type is unknown, `dims[0]` is not a whole number of blocks, or
/// the size overflows `u64`.
pub fn tensor_bytes(ggml_type: u32, dims: &[u64]) -> Option<u64> {
    let info = ggml_type_info(ggml_type)?;
    let elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
    let first = dims.first().copied().unwrap_or(1);
    if first % info.block_size != 0 {
        return None;
    }
    (elements / info.block_size).checked_mul(info.type_size)
}

/// The name of a `general.file_type` value, from llama.cpp's `llama_ftype`
/// enum (`LLAMA_FTYPE_MOSTLY_Q4_K_M` -> `Q4_K_M`), or `None` if unknown.
pub fn file_type_name(file_type: u32) -> Option<&'static str> {
    Some(match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        4 => "Q4_1_SOME_F16",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        39 => "NVFP4",
        40 => "Q1_0",
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// reader
// ---------------------------------------------------------------------------

/// GGUF metadata value types.
mod vt {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// Size of a fixed-size value type, `None` for string and array.
fn fixed_size(value_type: u32) -> Option<u64> {
    match value_type {
        vt::U8 | vt::I8 | vt::BOOL => Some(1),
        vt::U16 | vt::I16 => Some(2),
        vt::U32 | vt::I32 | vt::F32 => Some(4),
        vt::U64 | vt::I64 | vt::F64 => Some(8),
        _ => None,
    }
}

/// One tensor info record as read from the header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TensorInfo {
    n_dims: u32,
    dims: [u64; MAX_DIMS as usize],
    ggml_type: u32,
    offset: u64,
}

impl TensorInfo {
    fn dims(&self) -> &[u64] {
        &self.dims[..self.n_dims as usize]
    }
}

/// A reader that knows its position, turns short reads into
/// [`GgufError::Truncated`] and skips without storing.
struct Input<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Input<R> {
    fn exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), GgufError> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(GgufError::Truncated {
                what,
                offset: self.pos,
            }),
            Err(e) => Err(e.into()),
        }
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        let mut b = [0; 4];
        self.exact(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        let mut b = [0; 8];
        self.exact(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Skips `n` bytes without storing them.
    fn skip(&mut self, n: u64, what: &'static str) -> Result<(), GgufError> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        if copied < n {
            return Err(GgufError::Truncated {
                what,
                offset: self.pos + copied,
            });
        }
        self.pos += n;
        Ok(())
    }

    /// Reads `len` bytes into `buf` (cleared first), growing it only as data
    /// arrives, so a lying length cannot allocate more than the input holds.
    fn bytes_into(
        &mut self,
        len: u64,
        buf: &mut Vec<u8>,
        what: &'static str,
    ) -> Result<(), GgufError> {
        buf.clear();
        let got = (&mut self.inner).take(len).read_to_end(buf)? as u64;
        if got < len {
            return Err(GgufError::Truncated {
                what,
                offset: self.pos + got,
            });
        }
        self.pos += len;
        Ok(())
    }

    /// Reads a string length and checks it against `limit`.
    fn string_len(&mut self, what: &'static str, limit: u64) -> Result<u64, GgufError> {
        let len = self.u64(what)?;
        if len > limit {
            return Err(GgufError::TooLarge {
                what: format!("a {what} length"),
                value: len,
                limit,
            });
        }
        Ok(len)
    }

    fn string(
        &mut self,
        what: &'static str,
        limit: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), GgufError> {
        let len = self.string_len(what, limit)?;
        self.bytes_into(len, buf, what)
    }

    /// Skips one metadata value of `value_type`.
    fn skip_value(&mut self, value_type: u32, depth: u32) -> Result<(), GgufError> {
        if let Some(size) = fixed_size(value_type) {
            return self.skip(size, "metadata value");
        }
        match value_type {
            vt::STRING => {
                let len = self.string_len("string value", MAX_STRING_LEN)?;
                self.skip(len, "string value")
            }
            vt::ARRAY => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(invalid(format!(
                        "arrays nested deeper than {MAX_ARRAY_DEPTH} levels"
                    )));
                }
                let elem_type = self.u32("array element type")?;
                let count = self.u64("array length")?;
                if count > MAX_ARRAY_LEN {
                    return Err(GgufError::TooLarge {
                        what: "an array length".into(),
                        value: count,
                        limit: MAX_ARRAY_LEN,
                    });
                }
                if let Some(size) = fixed_size(elem_type) {
                    // count <= 2^26 and size <= 8: no overflow.
                    return self.skip(count * size, "array elements");
                }
                if elem_type != vt::STRING && elem_type != vt::ARRAY {
                    return Err(invalid(format!("unknown array element type {elem_type}")));
                }
                for _ in 0..count {
                    self.skip_value(elem_type, depth + 1)?;
                }
                Ok(())
            }
            other => Err(invalid(format!("unknown metadata value type {other}"))),
        }
    }

    /// Reads an integer value of any integer type as `u64`; `None` if the
    /// value type is not an integer (the value is then still unread).
    fn unsigned(&mut self, value_type: u32, key: &str) -> Result<Option<u64>, GgufError> {
        let what = "integer value";
        let v: i128 = match value_type {
            vt::U8 | vt::I8 => {
                let mut b = [0; 1];
                self.exact(&mut b, what)?;
                if value_type == vt::U8 {
                    b[0].into()
                } else {
                    i8::from_le_bytes(b).into()
                }
            }
            vt::U16 | vt::I16 => {
                let mut b = [0; 2];
                self.exact(&mut b, what)?;
                if value_type == vt::U16 {
                    u16::from_le_bytes(b).into()
                } else {
                    i16::from_le_bytes(b).into()
                }
            }
            vt::U32 => self.u32(what)?.into(),
            vt::I32 => (self.u32(what)? as i32).into(),
            vt::U64 => self.u64(what)?.into(),
            vt::I64 => (self.u64(what)? as i64).into(),
            _ => return Ok(None),
        };
        u64::try_from(v)
            .map(Some)
            .map_err(|_| invalid(format!("{key} is negative ({v})")))
    }
}

/// Reads a [`GgufSummary`] from the start of a GGUF stream. Reads only the
/// header (metadata and tensor infos), never tensor data; buffers internally.
pub fn read_summary<R: Read>(reader: R) -> Result<GgufSummary, GgufError> {
    read_header(reader, &mut |_| {})
}

/// Reads a [`GgufSummary`] from the GGUF file at `path`.
pub fn read_summary_file(path: &Path) -> Result<GgufSummary, GgufError> {
    read_summary(File::open(path)?)
}

/// Metadata keys the summary is made of; each may appear once.
#[derive(Default)]
struct Seen {
    architecture: Option<String>,
    name: Option<String>,
    general_type: Option<String>,
    file_type: Option<u32>,
    alignment: Option<u64>,
    has_chat_template: bool,
    /// `(architecture prefix, value)` of `*.context_length` keys, resolved
    /// once the architecture is known (it need not come first).
    context_lengths: Vec<(String, u64)>,
}

/// At most this many `*.context_length` keys are remembered.
const MAX_CONTEXT_LENGTH_KEYS: usize = 16;

fn read_header<R: Read>(
    reader: R,
    on_tensor: &mut dyn FnMut(&TensorInfo),
) -> Result<GgufSummary, GgufError> {
    let mut input = Input {
        inner: BufReader::with_capacity(64 << 10, reader),
        pos: 0,
    };

    let mut magic = [0; 4];
    input.exact(&mut magic, "magic")?;
    if magic != MAGIC {
        return Err(GgufError::NotGguf { found: magic });
    }
    let version = input.u32("version")?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let tensor_count = input.u64("tensor count")?;
    if tensor_count > MAX_TENSOR_COUNT {
        return Err(GgufError::TooLarge {
            what: "a tensor count".into(),
            value: tensor_count,
            limit: MAX_TENSOR_COUNT,
        });
    }
    let kv_count = input.u64("metadata count")?;
    if kv_count > MAX_KV_COUNT {
        return Err(GgufError::TooLarge {
            what: "a metadata count".into(),
            value: kv_count,
            limit: MAX_KV_COUNT,
        });
    }

    let mut seen = Seen::default();
    let mut key = Vec::new();
    for _ in 0..kv_count {
        input.string("metadata key", MAX_KEY_LEN, &mut key)?;
        let value_type = input.u32("metadata value type")?;
        read_kv(&mut input, &key, value_type, &mut seen)?;
    }

    let architecture = seen
        .architecture
        .ok_or_else(|| invalid("general.architecture is missing"))?;
    let alignment = seen.alignment.unwrap_or(DEFAULT_ALIGNMENT);
    let context_length = seen
        .context_lengths
        .iter()
        .find(|(arch, _)| *arch == architecture)
        .map(|&(_, v)| v);

    let mut parameter_count: u64 = 0;
    // Bytes per ggml type id, for the dominant-type fallback.
    let mut bytes_by_type: Vec<(u32, u128)> = Vec::new();
    let mut name = Vec::new();
    for _ in 0..tensor_count {
        input.string("tensor name", MAX_KEY_LEN, &mut name)?;
        let n_dims = input.u32("tensor dimension count")?;
        if n_dims > MAX_DIMS {
            return Err(invalid(format!(
                "tensor {} has {n_dims} dimensions (at most {MAX_DIMS})",
                String::from_utf8_lossy(&name)
            )));
        }
        let mut info = TensorInfo {
            n_dims,
            dims: [1; MAX_DIMS as usize],
            ggml_type: 0,
            offset: 0,
        };
        for d in info.dims.iter_mut().take(n_dims as usize) {
            *d = input.u64("tensor dimension")?;
        }
        info.ggml_type = input.u32("tensor type")?;
        info.offset = input.u64("tensor offset")?;

        let elements = info
            .dims()
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| {
                invalid(format!(
                    "tensor {} has {:?} elements, which overflows",
                    String::from_utf8_lossy(&name),
                    info.dims()
                ))
            })?;
        parameter_count = parameter_count
            .checked_add(elements)
            .ok_or_else(|| invalid("total parameter count overflows u64"))?;
        if !info.offset.is_multiple_of(alignment) {
            return Err(invalid(format!(
                "tensor {} offset {} is not a multiple of the alignment {alignment}",
                String::from_utf8_lossy(&name),
                info.offset
            )));
        }
        // Unknown types are tolerated (a newer llama.cpp may know them) and
        // left out of the dominant-type count.
        if let Some(t) = ggml_type_info(info.ggml_type) {
            if !info.dims[0].is_multiple_of(t.block_size) {
                return Err(invalid(format!(
                    "tensor {} of type {} has a first dimension {} that is not a multiple of its block size {}",
                    String::from_utf8_lossy(&name),
                    t.name,
                    info.dims[0],
                    t.block_size
                )));
            }
            let bytes = u128::from(elements / t.block_size) * u128::from(t.type_size);
            match bytes_by_type.iter_mut().find(|(id, _)| *id == t.id) {
                Some((_, total)) => *total += bytes,
                None => bytes_by_type.push((t.id, bytes)),
            }
        }
        on_tensor(&info);
    }

    let quantization = seen
        .file_type
        .and_then(file_type_name)
        .map(str::to_owned)
        .or_else(|| {
            // Most bytes wins; ties go to the lower type id.
            bytes_by_type
                .iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                .and_then(|&(id, _)| ggml_type_info(id))
                .map(|t| t.name.to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());

    let tensor_data_offset = input
        .pos
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| invalid("tensor data offset overflows"))?;

    Ok(GgufSummary {
        version,
        tensor_count,
        name: seen.name,
        architecture,
        general_type: seen.general_type,
        file_type: seen.file_type,
        quantization,
        parameter_count,
        context_length,
        has_chat_template: seen.has_chat_template,
        alignment,
        tensor_data_offset,
    })
}

/// Reads (or skips) the value of one metadata pair.
fn read_kv<R: Read>(
    input: &mut Input<R>,
    key: &[u8],
    value_type: u32,
    seen: &mut Seen,
) -> Result<(), GgufError> {
    fn once<T>(slot: &Option<T>, key: &str) -> Result<(), GgufError> {
        match slot {
            Some(_) => Err(invalid(format!("duplicate key {key}"))),
            None => Ok(()),
        }
    }
    fn string<R: Read>(
        input: &mut Input<R>,
        value_type: u32,
        key: &str,
    ) -> Result<String, GgufError> {
        if value_type != vt::STRING {
            return Err(invalid(format!(
                "{key} has value type {value_type}, expected a string"
            )));
        }
        let mut buf = Vec::new();
        input.string("string value", MAX_STRING_LEN, &mut buf)?;
        String::from_utf8(buf).map_err(|_| invalid(format!("{key} is not UTF-8")))
    }
    fn integer<R: Read>(
        input: &mut Input<R>,
        value_type: u32,
        key: &str,
    ) -> Result<u64, GgufError> {
        input.unsigned(value_type, key)?.ok_or_else(|| {
            invalid(format!(
                "{key} has value type {value_type}, expected an integer"
            ))
        })
    }

    match key {
        b"general.architecture" => {
            once(&seen.architecture, "general.architecture")?;
            seen.architecture = Some(string(input, value_type, "general.architecture")?);
        }
        b"general.name" => {
            once(&seen.name, "general.name")?;
            seen.name = Some(string(input, value_type, "general.name")?);
        }
        b"general.type" => {
            once(&seen.general_type, "general.type")?;
            seen.general_type = Some(string(input, value_type, "general.type")?);
        }
        b"general.file_type" => {
            once(&seen.file_type, "general.file_type")?;
            let v = integer(input, value_type, "general.file_type")?;
            let v = u32::try_from(v)
                .map_err(|_| invalid(format!("general.file_type {v} is out of range")))?;
            seen.file_type = Some(v);
        }
        b"general.alignment" => {
            once(&seen.alignment, "general.alignment")?;
            let v = integer(input, value_type, "general.alignment")?;
            if v == 0 || !v.is_power_of_two() || v > u64::from(u32::MAX) {
                return Err(invalid(format!(
                    "general.alignment {v} is not a power of two that fits in u32"
                )));
            }
            seen.alignment = Some(v);
        }
        b"tokenizer.chat_template" => {
            if seen.has_chat_template {
                return Err(invalid("duplicate key tokenizer.chat_template"));
            }
            if value_type != vt::STRING {
                return Err(invalid(format!(
                    "tokenizer.chat_template has value type {value_type}, expected a string"
                )));
            }
            seen.has_chat_template = true;
            input.skip_value(value_type, 0)?;
        }
        _ => {
            if let Some(arch) = key.strip_suffix(b".context_length") {
                if seen.context_lengths.len() < MAX_CONTEXT_LENGTH_KEYS {
                    if let Some(v) = input.unsigned(value_type, "context_length")? {
                        let arch = String::from_utf8_lossy(arch).into_owned();
                        if seen.context_lengths.iter().any(|(a, _)| *a == arch) {
                            return Err(invalid(format!("duplicate key {arch}.context_length")));
                        }
                        seen.context_lengths.push((arch, v));
                        return Ok(());
                    }
                }
            }
            input.skip_value(value_type, 0)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// writer
// ---------------------------------------------------------------------------

/// Writes a minimal but valid GGUF v3 file, for tests and benchmarks.
///
/// The header holds three metadata pairs (`general.architecture`,
/// `general.name`, `general.alignment` = 32) and one tensor info per entry of
/// `tensors`, each `(name, dims, ggml_type)`; tensors are laid out one after
/// another, each at a 32-byte aligned offset. After the header and its
/// padding, `fill(index, len, out)` is called once per tensor, in order, and
/// must write exactly `len` bytes of tensor data to `out`; the writer adds the
/// padding between tensors.
///
/// Returns the number of bytes written. Fails with
/// [`io::ErrorKind::InvalidInput`] for a tensor whose type is unknown, whose
/// first dimension is not a whole number of blocks, or that has more than
/// [`MAX_DIMS`] dimensions, and when `fill` writes the wrong number of bytes.
///
/// ```
/// use kolm_artifact::gguf;
/// use std::io::{self, Read};
///
/// let mut file = Vec::new();
/// gguf::write_minimal(&mut file, "llama", "tiny", &[("w", &[64, 2], 1)], |_, len, out| {
///     io::copy(&mut io::repeat(0).take(len), out).map(|_| ())
/// })
/// .unwrap();
/// let summary = gguf::read_summary(file.as_slice()).unwrap();
/// assert_eq!(summary.parameter_count, 128);
/// assert_eq!(summary.quantization, "F16");
/// ```
pub fn write_minimal<W: Write>(
    out: &mut W,
    architecture: &str,
    name: &str,
    tensors: &[(&str, &[u64], u32)],
    mut fill: impl FnMut(usize, u64, &mut dyn Write) -> io::Result<()>,
) -> io::Result<u64> {
    const ALIGN: u64 = DEFAULT_ALIGNMENT;
    let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);

    let mut sizes = Vec::with_capacity(tensors.len());
    for &(tname, dims, ty) in tensors {
        if dims.len() > MAX_DIMS as usize {
            return Err(bad(format!(
                "tensor {tname}: more than {MAX_DIMS} dimensions"
            )));
        }
        let len = tensor_bytes(ty, dims).ok_or_else(|| {
            bad(format!(
                "tensor {tname}: unknown type {ty} or bad dims {dims:?}"
            ))
        })?;
        sizes.push(len);
    }

    let mut w = Counting {
        inner: out,
        written: 0,
    };
    let put_str = |w: &mut Counting<'_, W>, s: &str| -> io::Result<()> {
        w.write_all(&(s.len() as u64).to_le_bytes())?;
        w.write_all(s.as_bytes())
    };
    w.write_all(&MAGIC)?;
    w.write_all(&3u32.to_le_bytes())?;
    w.write_all(&(tensors.len() as u64).to_le_bytes())?;
    w.write_all(&3u64.to_le_bytes())?;
    put_str(&mut w, "general.architecture")?;
    w.write_all(&vt::STRING.to_le_bytes())?;
    put_str(&mut w, architecture)?;
    put_str(&mut w, "general.name")?;
    w.write_all(&vt::STRING.to_le_bytes())?;
    put_str(&mut w, name)?;
    put_str(&mut w, "general.alignment")?;
    w.write_all(&vt::U32.to_le_bytes())?;
    w.write_all(&(ALIGN as u32).to_le_bytes())?;

    let mut offset = 0u64;
    let mut offsets = Vec::with_capacity(tensors.len());
    for (&(tname, dims, ty), &len) in tensors.iter().zip(&sizes) {
        put_str(&mut w, tname)?;
        w.write_all(&(dims.len() as u32).to_le_bytes())?;
        for d in dims {
            w.write_all(&d.to_le_bytes())?;
        }
        w.write_all(&ty.to_le_bytes())?;
        w.write_all(&offset.to_le_bytes())?;
        offsets.push(offset);
        offset = (offset + len).next_multiple_of(ALIGN);
    }
    let data_start = w.written.next_multiple_of(ALIGN);
    w.pad_to(data_start)?;

    for (i, (&len, &off)) in sizes.iter().zip(&offsets).enumerate() {
        w.pad_to(data_start + off)?;
        let before = w.written;
        fill(i, len, &mut w)?;
        let wrote = w.written - before;
        if wrote != len {
            return Err(bad(format!(
                "fill wrote {wrote} bytes for tensor {}, expected {len}",
                tensors[i].0
            )));
        }
    }
    Ok(w.written)
}

/// A writer that counts the bytes written through it.
struct Counting<'a, W> {
    inner: &'a mut W,
    written: u64,
}

impl<W: Write> Counting<'_, W> {
    fn pad_to(&mut self, pos: u64) -> io::Result<()> {
        let n = pos - self.written;
        io::copy(&mut io::repeat(0).take(n), self)?;
        Ok(())
    }
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests;
