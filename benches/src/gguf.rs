//! A synthetic GGUF v3 file generator.
//!
//! [`write_synthetic`] writes a valid GGUF v3 file of an exact size: a header
//! that a GGUF reader accepts (`general.architecture = "llama"`,
//! `general.name`, `general.alignment = 32` and a few llama keys), F32 tensor
//! infos named like llama FFN weights whose byte counts add up to the
//! requested size, then pseudo-random tensor bytes from a seeded PRNG.
//!
//! The data is random on purpose: a file of zeros would let a verifier, a
//! compressor or a sparse-file trick look faster than it is. Each 32-bit word
//! has bit 30 cleared, so every F32 is finite (exponent below 128), which
//! keeps the file a sane model as well as a valid one.
//!
//! This is deliberately independent of `kolm_artifact::gguf`: the benchmark
//! must not share a bug with the code it measures.
//!
//! Layout written (all integers little-endian):
//!
//! ```text
//! "GGUF" u32 version=3 u64 tensor_count u64 kv_count
//! kv*:     string key, u32 value_type, value   (string = u64 len + bytes)
//! tensor*: string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset
//! zero padding to a multiple of 32
//! tensor data (offsets are relative to here, each a multiple of 32)
//! ```

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// The GGUF magic, the first four bytes of every GGUF file.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// The GGUF version written.
pub const VERSION: u32 = 3;
/// `general.alignment`: tensor data and each tensor offset are multiples of it.
pub const ALIGNMENT: u64 = 32;
/// GGUF metadata value type of a `u32`.
pub const TYPE_U32: u32 = 4;
/// GGUF metadata value type of a string.
pub const TYPE_STRING: u32 = 8;
/// `ggml_type` of an F32 tensor.
pub const GGML_TYPE_F32: u32 = 0;
/// Default largest tensor, in bytes (64 MiB), so a 2 GiB file has 32 tensors.
pub const DEFAULT_MAX_TENSOR_BYTES: u64 = 64 << 20;
/// Data is generated and written in chunks of this many bytes (1 MiB).
pub const CHUNK: usize = 1 << 20;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Exact file size in bytes; rounded down to a multiple of [`ALIGNMENT`].
    pub size: u64,
    /// `general.name`.
    pub name: String,
    /// PRNG seed of the tensor data.
    pub seed: u64,
    /// Largest tensor in bytes (a multiple of [`ALIGNMENT`]); the last tensor
    /// may be a little larger so the sizes add up.
    pub max_tensor_bytes: u64,
}

impl Spec {
    /// A spec with the default tensor size and seed.
    pub fn new(size: u64, name: impl Into<String>) -> Self {
        Self {
            size,
            name: name.into(),
            seed: 0x6b6f_6c6d_6265_6e63, // "kolmbenc"
            max_tensor_bytes: DEFAULT_MAX_TENSOR_BYTES,
        }
    }
}

/// One tensor info as written in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.ffn_up.weight`.
    pub name: String,
    /// Dimensions, innermost first (GGUF order); always two here.
    pub dims: [u64; 2],
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Bytes of F32 data.
    pub fn nbytes(&self) -> u64 {
        self.dims[0] * self.dims[1] * 4
    }
}

/// The planned file: header bytes (padded) and the tensors after them.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The serialized header including the padding to [`ALIGNMENT`].
    pub header: Vec<u8>,
    /// The tensors, in file order.
    pub tensors: Vec<TensorInfo>,
    /// Total file size: header plus data.
    pub total: u64,
}

impl Plan {
    /// Bytes of tensor data (file size minus header).
    pub fn data_len(&self) -> u64 {
        self.total - self.header.len() as u64
    }
}

/// Splits `elems` F32 elements into two dims `[ne0, ne1]` with `ne0` the
/// largest power of two up to 4096 that divides `elems`.
fn dims_for(elems: u64) -> [u64; 2] {
    let mut ne0 = 4096;
    while ne0 > 1 && !elems.is_multiple_of(ne0) {
        ne0 /= 2;
    }
    [ne0, elems / ne0]
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    put_u64(b, s.len() as u64);
    b.extend_from_slice(s.as_bytes());
}

fn kv_str(b: &mut Vec<u8>, k: &str, v: &str) {
    put_str(b, k);
    put_u32(b, TYPE_STRING);
    put_str(b, v);
}

fn kv_u32(b: &mut Vec<u8>, k: &str, v: u32) {
    put_str(b, k);
    put_u32(b, TYPE_U32);
    put_u32(b, v);
}

/// Serializes the header for `tensors`, padded with zeros to [`ALIGNMENT`].
/// Its length depends only on the name and the tensor names, not on sizes.
fn header_bytes(name: &str, tensors: &[TensorInfo]) -> Vec<u8> {
    let mut b = Vec::with_capacity(256 + 64 * tensors.len());
    b.extend_from_slice(MAGIC);
    put_u32(&mut b, VERSION);
    put_u64(&mut b, tensors.len() as u64);
    let kv_count_at = b.len();
    put_u64(&mut b, 0);
    let mut kvs = 0u64;
    kv_str(&mut b, "general.architecture", "llama");
    kvs += 1;
    kv_str(&mut b, "general.name", name);
    kvs += 1;
    kv_u32(&mut b, "general.alignment", ALIGNMENT as u32);
    kvs += 1;
    kv_u32(&mut b, "general.file_type", 0); // ALL_F32
    kvs += 1;
    let blocks = u32::try_from(tensors.len()).unwrap_or(u32::MAX);
    kv_u32(&mut b, "llama.block_count", blocks);
    kvs += 1;
    kv_u32(&mut b, "llama.context_length", 2048);
    kvs += 1;
    kv_u32(&mut b, "llama.embedding_length", 4096);
    kvs += 1;
    b[kv_count_at..kv_count_at + 8].copy_from_slice(&kvs.to_le_bytes());
    for t in tensors {
        put_str(&mut b, &t.name);
        put_u32(&mut b, 2);
        put_u64(&mut b, t.dims[0]);
        put_u64(&mut b, t.dims[1]);
        put_u32(&mut b, GGML_TYPE_F32);
        put_u64(&mut b, t.offset);
    }
    let padded = (b.len() as u64).div_ceil(ALIGNMENT) * ALIGNMENT;
    b.resize(padded as usize, 0);
    b
}

fn tensor_name(i: usize) -> String {
    format!("blk.{i}.ffn_up.weight")
}

/// Plans a file of `spec.size` bytes (rounded down to [`ALIGNMENT`]):
/// `n - 1` tensors of `max_tensor_bytes` and a last one taking the rest.
pub fn plan(spec: &Spec) -> io::Result<Plan> {
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    let chunk = spec.max_tensor_bytes;
    if chunk == 0 || !chunk.is_multiple_of(ALIGNMENT) {
        return Err(invalid(format!(
            "max_tensor_bytes {chunk} must be a positive multiple of {ALIGNMENT}"
        )));
    }
    let size = spec.size / ALIGNMENT * ALIGNMENT;
    let dummy = |n: usize| -> Vec<TensorInfo> {
        (0..n)
            .map(|i| TensorInfo {
                name: tensor_name(i),
                dims: [1, 1],
                offset: 0,
            })
            .collect()
    };
    let header_len = |n: usize| header_bytes(&spec.name, &dummy(n)).len() as u64;
    let too_small = || invalid(format!("size {} is too small for a GGUF header", spec.size));
    // The header grows with n, so data(n) <= size - header(1): n0 tensors of
    // `chunk` always suffice; walk down until the last tensor is non-empty.
    let first = size.checked_sub(header_len(1)).ok_or_else(too_small)?;
    let mut n = first.div_ceil(chunk).max(1) as usize;
    let data = loop {
        let data = size.checked_sub(header_len(n)).ok_or_else(too_small)?;
        if data > (n as u64 - 1) * chunk || n == 1 {
            break data;
        }
        n -= 1;
    };
    if data == 0 {
        return Err(too_small());
    }
    let mut tensors = Vec::with_capacity(n);
    let mut offset = 0;
    for i in 0..n {
        let bytes = if i + 1 < n { chunk } else { data - offset };
        tensors.push(TensorInfo {
            name: tensor_name(i),
            dims: dims_for(bytes / 4),
            offset,
        });
        offset += bytes;
    }
    let header = header_bytes(&spec.name, &tensors);
    debug_assert_eq!(header.len() as u64 + offset, size);
    Ok(Plan {
        header,
        tensors,
        total: size,
    })
}

/// A small, fast, seeded PRNG (xorshift64*); not for cryptography.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    /// Seeds the generator (a zero seed is replaced, xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        // splitmix64 scramble so close seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Self(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Fills `buf` (length a multiple of 8) with random finite little-endian
    /// F32 values: bit 30 of every 32-bit word is cleared.
    pub fn fill_f32(&mut self, buf: &mut [u8]) {
        const FINITE: u64 = 0xbfff_ffff_bfff_ffff;
        for w in buf.chunks_exact_mut(8) {
            w.copy_from_slice(&(self.next_u64() & FINITE).to_le_bytes());
        }
    }
}

/// Writes the file planned for `spec` to `path` (created or truncated) and
/// returns the plan. The data is generated and written in 1 MiB chunks, so
/// memory stays flat for any size.
pub fn write_synthetic(path: &Path, spec: &Spec) -> io::Result<Plan> {
    let plan = plan(spec)?;
    let mut w = BufWriter::with_capacity(CHUNK, File::create(path)?);
    w.write_all(&plan.header)?;
    let mut rng = Prng::new(spec.seed);
    let mut buf = vec![0u8; CHUNK];
    let mut left = plan.data_len();
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        // data_len is a multiple of ALIGNMENT, so n is a multiple of 8.
        rng.fill_f32(&mut buf[..n]);
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal reader for the subset written here, to check the writer.
    struct Cursor<'a>(&'a [u8], usize);

    impl Cursor<'_> {
        fn take(&mut self, n: usize) -> &[u8] {
            let s = &self.0[self.1..self.1 + n];
            self.1 += n;
            s
        }
        fn u32(&mut self) -> u32 {
            u32::from_le_bytes(self.take(4).try_into().unwrap())
        }
        fn u64(&mut self) -> u64 {
            u64::from_le_bytes(self.take(8).try_into().unwrap())
        }
        fn string(&mut self) -> String {
            let n = self.u64() as usize;
            String::from_utf8(self.take(n).to_vec()).unwrap()
        }
    }

    fn check_file(size: u64, max_tensor_bytes: u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let spec = Spec {
            max_tensor_bytes,
            ..Spec::new(size, "bench-model")
        };
        let plan = write_synthetic(&path, &spec).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, size / ALIGNMENT * ALIGNMENT);
        assert_eq!(plan.total, bytes.len() as u64);

        let mut c = Cursor(&bytes, 0);
        assert_eq!(c.take(4), b"GGUF");
        assert_eq!(c.u32(), 3);
        let n_tensors = c.u64();
        let n_kv = c.u64();
        assert_eq!(n_tensors as usize, plan.tensors.len());
        let mut arch = None;
        let mut name = None;
        let mut align = None;
        for _ in 0..n_kv {
            let k = c.string();
            match c.u32() {
                TYPE_STRING => {
                    let v = c.string();
                    match k.as_str() {
                        "general.architecture" => arch = Some(v),
                        "general.name" => name = Some(v),
                        _ => {}
                    }
                }
                TYPE_U32 => {
                    let v = c.u32();
                    if k == "general.alignment" {
                        align = Some(v);
                    }
                }
                t => panic!("unexpected type {t}"),
            }
        }
        assert_eq!(arch.as_deref(), Some("llama"));
        assert_eq!(name.as_deref(), Some("bench-model"));
        assert_eq!(align, Some(32));

        let mut expect_offset = 0;
        let mut data = 0;
        for i in 0..n_tensors {
            assert_eq!(c.string(), format!("blk.{i}.ffn_up.weight"));
            assert_eq!(c.u32(), 2);
            let d0 = c.u64();
            let d1 = c.u64();
            assert_eq!(c.u32(), GGML_TYPE_F32);
            let off = c.u64();
            assert_eq!(off, expect_offset);
            assert_eq!(off % ALIGNMENT, 0);
            let nbytes = d0 * d1 * 4;
            assert!(nbytes > 0);
            expect_offset += nbytes;
            data += nbytes;
        }
        let data_start = c.1.div_ceil(ALIGNMENT as usize) * ALIGNMENT as usize;
        assert_eq!(data_start, plan.header.len());
        assert!(bytes[c.1..data_start].iter().all(|&b| b == 0), "padding");
        assert_eq!(data_start as u64 + data, bytes.len() as u64);

        let payload = &bytes[data_start..];
        let zeros = payload.iter().filter(|&&b| b == 0).count();
        assert!(
            zeros * 64 < payload.len(),
            "data looks empty: {zeros} zeros"
        );
        for w in payload.chunks_exact(4) {
            assert!(f32::from_le_bytes(w.try_into().unwrap()).is_finite());
        }
    }

    #[test]
    fn small_file_one_tensor() {
        check_file(64 << 10, DEFAULT_MAX_TENSOR_BYTES);
    }

    #[test]
    fn many_tensors_exact_size() {
        check_file(3 << 20, 256 << 10);
        check_file((3 << 20) + 32 * 7, 256 << 10);
        check_file(1 << 20, 1 << 10); // ~1000 tensors: header grows past a chunk
    }

    #[test]
    fn size_rounds_down_to_alignment() {
        check_file((1 << 20) + 5, 64 << 10);
    }

    #[test]
    fn too_small_is_an_error() {
        assert!(plan(&Spec::new(64, "x")).is_err());
    }

    #[test]
    fn same_seed_same_bytes() {
        let mut a = Prng::new(1);
        let mut b = Prng::new(1);
        let mut c = Prng::new(2);
        let (x, y, z) = (a.next_u64(), b.next_u64(), c.next_u64());
        assert_eq!(x, y);
        assert_ne!(x, z);
    }
}
