//! The zip container in its one canonical RS-1 shape: every entry STORED,
//! ZIP64 fields always present, data 4096-aligned through a padding extra
//! field, entries back to back, then the central directory, the ZIP64 end
//! record and locator, and a comment-free end record. The writer produces
//! exactly this shape; the layout reader accepts nothing else and names the
//! entry in every refusal. `docs/rs-1.md` spells out every byte.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use crate::error::{ArtifactError, Result};
use crate::names::{self, Role, MAX_ENTRIES};
use crate::progress::Progress;

/// Entry data starts at a multiple of this many bytes.
pub const ALIGNMENT: u64 = 4096;

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const ZIP64_END_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const END_SIG: u32 = 0x0605_4b50;

const LOCAL_FIXED: u64 = 30;
const CENTRAL_FIXED: usize = 46;
const ZIP64_END_LEN: u64 = 56;
const ZIP64_LOCATOR_LEN: u64 = 20;
const END_LEN: u64 = 22;

/// ZIP64 extended information extra field.
const ZIP64_EXTRA_ID: u16 = 0x0001;
/// Alignment padding extra field (the id Android's zipalign uses).
const PADDING_EXTRA_ID: u16 = 0xd935;
/// "Version needed to extract": 4.5, ZIP64.
const VERSION_NEEDED: u16 = 45;
/// "Version made by": Unix (3), spec 4.5.
const VERSION_MADE_BY: u16 = (3 << 8) | 45;
/// MS-DOS date 1980-01-01, time 00:00: entries carry no timestamps.
const DOS_DATE: u16 = 0x0021;
/// Unix mode of a regular file 0644 in the high half of the external attributes.
const EXTERNAL_ATTRS: u32 = 0o100644 << 16;
const UNIX_TYPE_MASK: u32 = 0o170000;
const UNIX_SYMLINK: u32 = 0o120000;

/// Bytes read or written per I/O call when streaming entry data.
pub(crate) const CHUNK: usize = 1 << 20;
/// Largest central directory the reader will load.
const MAX_CENTRAL_DIRECTORY: u64 = 16 << 20;

/// One entry as laid out in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZipEntry {
    pub name: String,
    pub role: Role,
    pub header_offset: u64,
    pub data_offset: u64,
    pub size: u64,
    pub crc32: u32,
}

/// An entry the writer has finished: where it is and what it hashed to.
#[derive(Clone, Debug)]
pub struct WrittenEntry {
    pub name: String,
    pub role: Role,
    pub data_offset: u64,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// Writes a canonical RS-1 zip to a seekable sink, streaming entry data.
#[derive(Debug)]
pub struct ZipWriter<W: Write + Seek> {
    out: W,
    position: u64,
    entries: Vec<ZipEntry>,
}

impl<W: Write + Seek> ZipWriter<W> {
    /// Starts an archive at the current position of `out`, which must be 0.
    pub fn new(out: W) -> Self {
        ZipWriter {
            out,
            position: 0,
            entries: Vec::new(),
        }
    }

    /// Streams `data` into a new entry, hashing (SHA-256 and CRC-32) as it
    /// writes. The header is written first with placeholder CRC and sizes and
    /// patched when the data is done, so nothing is buffered.
    pub fn add_entry(
        &mut self,
        name: &str,
        data: &mut dyn Read,
        progress: &dyn Progress,
    ) -> io::Result<WrittenEntry> {
        let role = names::classify(name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: {e}")))?;
        let header_offset = self.position;
        let header = local_header(name, header_offset, 0, 0);
        self.out.write_all(&header)?;
        let data_offset = header_offset + header.len() as u64;

        let mut sha = Sha256::new();
        let mut crc = crc32fast::Hasher::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let chunk = &buf[..n];
            sha.update(chunk);
            crc.update(chunk);
            self.out.write_all(chunk)?;
            size += n as u64;
            progress.advance(n as u64);
        }
        let crc32 = crc.finalize();

        // Patch CRC and the ZIP64 sizes in place, then return to the end.
        let patched = local_header(name, header_offset, size, crc32);
        self.out.seek(SeekFrom::Start(header_offset))?;
        self.out.write_all(&patched)?;
        self.position = data_offset + size;
        self.out.seek(SeekFrom::Start(self.position))?;

        self.entries.push(ZipEntry {
            name: name.to_owned(),
            role,
            header_offset,
            data_offset,
            size,
            crc32,
        });
        Ok(WrittenEntry {
            name: name.to_owned(),
            role,
            data_offset,
            size,
            sha256: sha.finalize().into(),
        })
    }

    /// Writes the central directory and end records; returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        let cd_offset = self.position;
        let mut cd = Vec::new();
        for e in &self.entries {
            put_u32(&mut cd, CENTRAL_SIG);
            put_u16(&mut cd, VERSION_MADE_BY);
            put_u16(&mut cd, VERSION_NEEDED);
            put_u16(&mut cd, 0); // flags
            put_u16(&mut cd, 0); // method: STORED
            put_u16(&mut cd, 0); // time
            put_u16(&mut cd, DOS_DATE);
            put_u32(&mut cd, e.crc32);
            put_u32(&mut cd, u32::MAX);
            put_u32(&mut cd, u32::MAX);
            put_u16(&mut cd, e.name.len() as u16);
            put_u16(&mut cd, 28); // extra: ZIP64 with three u64
            put_u16(&mut cd, 0); // comment
            put_u16(&mut cd, 0); // disk start
            put_u16(&mut cd, 0); // internal attributes
            put_u32(&mut cd, EXTERNAL_ATTRS);
            put_u32(&mut cd, u32::MAX);
            cd.extend_from_slice(e.name.as_bytes());
            put_u16(&mut cd, ZIP64_EXTRA_ID);
            put_u16(&mut cd, 24);
            put_u64(&mut cd, e.size);
            put_u64(&mut cd, e.size);
            put_u64(&mut cd, e.header_offset);
        }
        let cd_size = cd.len() as u64;
        let zip64_end_offset = cd_offset + cd_size;
        let count = self.entries.len() as u64;

        put_u32(&mut cd, ZIP64_END_SIG);
        put_u64(&mut cd, ZIP64_END_LEN - 12);
        put_u16(&mut cd, VERSION_MADE_BY);
        put_u16(&mut cd, VERSION_NEEDED);
        put_u32(&mut cd, 0);
        put_u32(&mut cd, 0);
        put_u64(&mut cd, count);
        put_u64(&mut cd, count);
        put_u64(&mut cd, cd_size);
        put_u64(&mut cd, cd_offset);

        put_u32(&mut cd, ZIP64_LOCATOR_SIG);
        put_u32(&mut cd, 0);
        put_u64(&mut cd, zip64_end_offset);
        put_u32(&mut cd, 1);

        put_u32(&mut cd, END_SIG);
        put_u16(&mut cd, 0);
        put_u16(&mut cd, 0);
        put_u16(&mut cd, u16::MAX);
        put_u16(&mut cd, u16::MAX);
        put_u32(&mut cd, u32::MAX);
        put_u32(&mut cd, u32::MAX);
        put_u16(&mut cd, 0);

        self.out.write_all(&cd)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The local header for an entry whose header starts at `offset`, padded so
/// that the data after it starts on an [`ALIGNMENT`] boundary.
fn local_header(name: &str, offset: u64, size: u64, crc32: u32) -> Vec<u8> {
    let unpadded = offset + LOCAL_FIXED + name.len() as u64 + 20 + 6;
    let pad = (ALIGNMENT - unpadded % ALIGNMENT) % ALIGNMENT;
    let extra_len = 20 + 6 + pad;
    let mut h = Vec::with_capacity((LOCAL_FIXED + name.len() as u64 + extra_len) as usize);
    put_u32(&mut h, LOCAL_SIG);
    put_u16(&mut h, VERSION_NEEDED);
    put_u16(&mut h, 0);
    put_u16(&mut h, 0);
    put_u16(&mut h, 0);
    put_u16(&mut h, DOS_DATE);
    put_u32(&mut h, crc32);
    put_u32(&mut h, u32::MAX);
    put_u32(&mut h, u32::MAX);
    put_u16(&mut h, name.len() as u16);
    put_u16(&mut h, extra_len as u16);
    h.extend_from_slice(name.as_bytes());
    put_u16(&mut h, ZIP64_EXTRA_ID);
    put_u16(&mut h, 16);
    put_u64(&mut h, size);
    put_u64(&mut h, size);
    put_u16(&mut h, PADDING_EXTRA_ID);
    put_u16(&mut h, (2 + pad) as u16);
    put_u16(&mut h, ALIGNMENT as u16);
    h.resize(h.len() + pad as usize, 0);
    h
}

/// The entries of a structurally valid RS-1 archive, in file order.
#[derive(Clone, Debug)]
pub struct ZipLayout {
    pub entries: Vec<ZipEntry>,
    pub file_len: u64,
}

impl ZipLayout {
    /// The entry called `name`, if any.
    pub fn entry(&self, name: &str) -> Option<&ZipEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// Parses and checks the container structure of `file` without reading any
/// entry data. Every deviation from the canonical shape is refused.
pub fn read_layout(file: &File) -> Result<ZipLayout> {
    let file_len = file
        .metadata()
        .map_err(|source| ArtifactError::Io {
            path: "<archive>".into(),
            source,
        })?
        .len();
    let tail_fixed = END_LEN + ZIP64_LOCATOR_LEN + ZIP64_END_LEN;
    if file_len < tail_fixed {
        return Err(ArtifactError::NotAnArchive {
            reason: format!("{file_len} bytes is too short to hold the end records"),
        });
    }

    // End record: exactly the last 22 bytes, no comment.
    let end_offset = file_len - END_LEN;
    let end = read_at(file, end_offset, END_LEN as usize)?;
    if le32(&end, 0) != END_SIG || le16(&end, 20) != 0 {
        return Err(locate_misplaced_end(file, file_len)?);
    }
    if le16(&end, 4) != 0
        || le16(&end, 6) != 0
        || le16(&end, 8) != u16::MAX
        || le16(&end, 10) != u16::MAX
        || le32(&end, 12) != u32::MAX
        || le32(&end, 16) != u32::MAX
    {
        return Err(non_canonical(
            "<end record>",
            "the end record must defer to the ZIP64 end record",
        ));
    }

    // ZIP64 locator right before it, pointing right before itself.
    let locator_offset = end_offset - ZIP64_LOCATOR_LEN;
    let locator = read_at(file, locator_offset, ZIP64_LOCATOR_LEN as usize)?;
    if le32(&locator, 0) != ZIP64_LOCATOR_SIG {
        return Err(ArtifactError::TruncatedCentralDirectory {
            detail: "no ZIP64 end-of-central-directory locator".into(),
        });
    }
    let zip64_end_offset = locator_offset - ZIP64_END_LEN;
    if le32(&locator, 4) != 0 || le64(&locator, 8) != zip64_end_offset || le32(&locator, 16) != 1 {
        return Err(ArtifactError::TruncatedCentralDirectory {
            detail: "the ZIP64 locator does not point at the ZIP64 end record".into(),
        });
    }

    let z = read_at(file, zip64_end_offset, ZIP64_END_LEN as usize)?;
    if le32(&z, 0) != ZIP64_END_SIG || le64(&z, 4) != ZIP64_END_LEN - 12 {
        return Err(ArtifactError::TruncatedCentralDirectory {
            detail: "no ZIP64 end record where the locator says".into(),
        });
    }
    let count = le64(&z, 24);
    if le32(&z, 16) != 0 || le32(&z, 20) != 0 || le64(&z, 32) != count {
        return Err(non_canonical(
            "<end record>",
            "multi-disk archives are not RS-1",
        ));
    }
    if count > MAX_ENTRIES as u64 {
        return Err(ArtifactError::TooManyEntries {
            count,
            max: MAX_ENTRIES,
        });
    }
    let cd_size = le64(&z, 40);
    let cd_offset = le64(&z, 48);
    let cd_end = cd_offset.checked_add(cd_size);
    match cd_end {
        Some(end) if end == zip64_end_offset => {}
        Some(end) if end < zip64_end_offset && end >= cd_offset => {
            return Err(ArtifactError::UnexpectedBytes {
                offset: end,
                detail: format!(
                    "{} bytes between the central directory and the end records",
                    zip64_end_offset - end
                ),
            })
        }
        _ => {
            return Err(ArtifactError::TruncatedCentralDirectory {
                detail: format!(
                    "it claims {cd_size} bytes at offset {cd_offset}, past the end records at {zip64_end_offset}"
                ),
            })
        }
    }
    if cd_size > MAX_CENTRAL_DIRECTORY {
        return Err(ArtifactError::TruncatedCentralDirectory {
            detail: format!("{cd_size} bytes is over the {MAX_CENTRAL_DIRECTORY}-byte bound"),
        });
    }
    let cd = read_at(file, cd_offset, cd_size as usize)?;
    let mut entries = parse_central_directory(&cd, count)?;
    check_local_headers(file, &mut entries, cd_offset)?;
    Ok(ZipLayout { entries, file_len })
}

/// The last 22 bytes are not an end record: find out whether one sits earlier
/// (bytes were appended) or none exists (truncated, or not a zip at all).
fn locate_misplaced_end(file: &File, file_len: u64) -> Result<ArtifactError> {
    let window = file_len.min(65_535 + END_LEN + 4096);
    let tail = read_at(file, file_len - window, window as usize)?;
    let sig = END_SIG.to_le_bytes();
    if let Some(pos) = tail.windows(4).rposition(|w| w == sig) {
        let record_end = file_len - window + pos as u64 + END_LEN;
        if record_end < file_len {
            return Ok(ArtifactError::DataAfterArchive {
                bytes: file_len - record_end,
            });
        }
    }
    Ok(ArtifactError::NotAnArchive {
        reason: "no end-of-central-directory record: the file is truncated or not a zip".into(),
    })
}

fn parse_central_directory(cd: &[u8], count: u64) -> Result<Vec<ZipEntry>> {
    let truncated = |i: u64| ArtifactError::TruncatedCentralDirectory {
        detail: format!("record {i} of {count} runs past the end of the directory"),
    };
    let mut entries = Vec::with_capacity(count as usize);
    let mut seen = HashSet::new();
    let mut at = 0usize;
    for i in 0..count {
        let fixed = cd.get(at..at + CENTRAL_FIXED).ok_or_else(|| truncated(i))?;
        if le32(fixed, 0) != CENTRAL_SIG {
            return Err(ArtifactError::TruncatedCentralDirectory {
                detail: format!("record {i} has no central-directory signature"),
            });
        }
        let name_len = le16(fixed, 28) as usize;
        let extra_len = le16(fixed, 30) as usize;
        let comment_len = le16(fixed, 32) as usize;
        let var_end = at + CENTRAL_FIXED + name_len + extra_len + comment_len;
        let var = cd
            .get(at + CENTRAL_FIXED..var_end)
            .ok_or_else(|| truncated(i))?;
        let name_bytes = &var[..name_len];
        let extra = &var[name_len..name_len + extra_len];
        let name = String::from_utf8(name_bytes.to_vec()).map_err(|_| ArtifactError::BadName {
            name: String::from_utf8_lossy(name_bytes).into_owned(),
            reason: names::NameError::BadCharacter,
        })?;

        let flags = le16(fixed, 8);
        if flags & 0x0041 != 0 {
            return Err(ArtifactError::Encrypted { name });
        }
        let method = le16(fixed, 10);
        if method != 0 {
            return Err(ArtifactError::Compressed { name, method });
        }
        let attrs = le32(fixed, 38);
        if le16(fixed, 4) >> 8 == 3 && (attrs >> 16) & UNIX_TYPE_MASK == UNIX_SYMLINK {
            return Err(ArtifactError::Symlink { name });
        }
        let role = names::classify(&name).map_err(|reason| ArtifactError::BadName {
            name: name.clone(),
            reason,
        })?;
        if !seen.insert(name.clone()) {
            return Err(ArtifactError::DuplicateEntry { name });
        }
        if flags != 0 {
            return Err(non_canonical(
                &name,
                format!("general-purpose flags {flags:#06x}"),
            ));
        }
        if comment_len != 0 || le16(fixed, 34) != 0 {
            return Err(non_canonical(
                &name,
                "entry comments and multi-disk fields must be empty",
            ));
        }
        if le32(fixed, 20) != u32::MAX || le32(fixed, 24) != u32::MAX || le32(fixed, 42) != u32::MAX
        {
            return Err(non_canonical(
                &name,
                "sizes and offset must be in the ZIP64 field",
            ));
        }
        if extra.len() != 28 || le16(extra, 0) != ZIP64_EXTRA_ID || le16(extra, 2) != 24 {
            return Err(non_canonical(
                &name,
                "the extra field must be exactly one ZIP64 record",
            ));
        }
        let size = le64(extra, 4);
        let compressed = le64(extra, 12);
        let header_offset = le64(extra, 20);
        if size != compressed {
            return Err(ArtifactError::LyingSize {
                name,
                detail: format!("stored size {compressed} differs from its size {size}"),
            });
        }
        if size > role.max_size() {
            return Err(ArtifactError::TooLarge {
                name,
                size,
                bound: role.max_size(),
            });
        }
        entries.push(ZipEntry {
            name,
            role,
            header_offset,
            data_offset: 0,
            size,
            crc32: le32(fixed, 16),
        });
        at = var_end;
    }
    if at != cd.len() {
        return Err(ArtifactError::UnexpectedBytes {
            offset: at as u64,
            detail: format!(
                "{} bytes after the last central-directory record",
                cd.len() - at
            ),
        });
    }
    Ok(entries)
}

/// Walks the local headers in file order: they must start at byte 0, sit back
/// to back, agree with the central directory, and align their data. Fills in
/// each entry's data offset.
fn check_local_headers(file: &File, entries: &mut [ZipEntry], cd_offset: u64) -> Result<()> {
    let mut expected = 0u64;
    let mut previous: Option<String> = None;
    for e in entries.iter_mut() {
        if e.header_offset != expected {
            return Err(match previous.as_deref() {
                None if e.header_offset > 0 && e.header_offset < cd_offset => {
                    ArtifactError::DataBeforeArchive {
                        bytes: e.header_offset,
                    }
                }
                Some(prev) if e.header_offset < expected => ArtifactError::LyingSize {
                    name: prev.to_owned(),
                    detail: format!("its data runs into entry `{}`", e.name),
                },
                _ if e.header_offset > expected && e.header_offset < cd_offset => {
                    ArtifactError::UnexpectedBytes {
                        offset: expected,
                        detail: format!(
                            "{} bytes before entry `{}`",
                            e.header_offset - expected,
                            e.name
                        ),
                    }
                }
                _ => ArtifactError::LyingSize {
                    name: e.name.clone(),
                    detail: format!("its header offset {} is out of place", e.header_offset),
                },
            });
        }
        let fixed = read_at(file, e.header_offset, LOCAL_FIXED as usize)?;
        let mismatch = |field| ArtifactError::LocalHeaderMismatch {
            name: e.name.clone(),
            field,
        };
        if le32(&fixed, 0) != LOCAL_SIG {
            return Err(mismatch("signature"));
        }
        if le16(&fixed, 6) != 0 {
            return Err(mismatch("flags"));
        }
        if le16(&fixed, 8) != 0 {
            return Err(mismatch("method"));
        }
        if le32(&fixed, 14) != e.crc32 {
            return Err(mismatch("crc-32"));
        }
        if le32(&fixed, 18) != u32::MAX || le32(&fixed, 22) != u32::MAX {
            return Err(mismatch("size"));
        }
        let name_len = le16(&fixed, 26) as u64;
        let extra_len = le16(&fixed, 28) as u64;
        let var = read_at(
            file,
            e.header_offset + LOCAL_FIXED,
            (name_len + extra_len) as usize,
        )?;
        if &var[..name_len as usize] != e.name.as_bytes() {
            return Err(mismatch("name"));
        }
        let extra = &var[name_len as usize..];
        if extra.len() < 26 || le16(extra, 0) != ZIP64_EXTRA_ID || le16(extra, 2) != 16 {
            return Err(non_canonical(
                &e.name,
                "the local extra field must start with a ZIP64 record",
            ));
        }
        if le64(extra, 4) != e.size || le64(extra, 12) != e.size {
            return Err(mismatch("size"));
        }
        let padding = &extra[20..];
        if le16(padding, 0) != PADDING_EXTRA_ID
            || le16(padding, 2) as usize != padding.len() - 4
            || le16(padding, 4) as u64 != ALIGNMENT
            || padding[6..].iter().any(|&b| b != 0)
        {
            return Err(non_canonical(
                &e.name,
                "the alignment padding record is malformed",
            ));
        }
        e.data_offset = e.header_offset + LOCAL_FIXED + name_len + extra_len;
        if e.data_offset % ALIGNMENT != 0 {
            return Err(ArtifactError::Misaligned {
                name: e.name.clone(),
                offset: e.data_offset,
            });
        }
        expected = match e.data_offset.checked_add(e.size) {
            Some(end) if end <= cd_offset => end,
            _ => {
                return Err(ArtifactError::LyingSize {
                    name: e.name.clone(),
                    detail: format!(
                        "{} bytes at offset {} run past the central directory at {cd_offset}",
                        e.size, e.data_offset
                    ),
                })
            }
        };
        previous = Some(e.name.clone());
    }
    if expected != cd_offset {
        return Err(ArtifactError::UnexpectedBytes {
            offset: expected,
            detail: format!(
                "{} bytes before the central directory",
                cd_offset - expected
            ),
        });
    }
    Ok(())
}

fn non_canonical(name: &str, detail: impl Into<String>) -> ArtifactError {
    ArtifactError::NonCanonical {
        name: name.to_owned(),
        detail: detail.into(),
    }
}

/// Reads exactly `len` bytes at `offset`; a short file is a truncation.
fn read_at(file: &File, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset).map_err(|source| {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            ArtifactError::NotAnArchive {
                reason: format!("the file ends before offset {}", offset + len as u64),
            }
        } else {
            ArtifactError::Io {
                path: "<archive>".into(),
                source,
            }
        }
    })?;
    Ok(buf)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn put_u16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put_u32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put_u64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}
