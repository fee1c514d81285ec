//! The LoRA adapter as GGUF in llama.cpp's format: `general.type=adapter`,
//! `adapter.type=lora`, `adapter.lora.alpha`, the base's
//! `general.architecture`, and per module `blk.N.<module>.weight.lora_a`
//! (ggml `ne = [in, rank]`, candle shape `[rank, in]`) and `.lora_b`
//! (`ne = [rank, out]`, shape `[out, rank]`) in f32. llama.cpp checks
//! `a.ne[0] == W.ne[0]`, `b.ne[1] == W.ne[1]` and `a.ne[1] == b.ne[0]`, and
//! scales `B·A` by `alpha / rank`.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

use crate::error::{candle_message, TrainError};
use crate::lora::Lora;

/// Writes `lora` as a llama.cpp LoRA adapter for a base of `arch` (via a
/// temporary file renamed into place).
pub fn write_adapter(path: &Path, lora: &Lora, arch: &str) -> Result<(), TrainError> {
    let names = lora.names();
    let tensors: Vec<QTensor> = lora
        .vars()
        .iter()
        .map(|v| QTensor::quantize(v.as_tensor(), GgmlDType::F32))
        .collect::<Result<_, _>>()?;
    let arch = Value::String(arch.to_owned());
    let general_type = Value::String("adapter".into());
    let adapter_type = Value::String("lora".into());
    let alpha = Value::F32(lora.alpha);
    let name = Value::String("kolm-train LoRA".into());
    let metadata: Vec<(&str, &Value)> = vec![
        ("general.architecture", &arch),
        ("general.type", &general_type),
        ("general.name", &name),
        ("adapter.type", &adapter_type),
        ("adapter.lora.alpha", &alpha),
    ];
    let named: Vec<(&str, &QTensor)> = names
        .iter()
        .map(|s| s.as_str())
        .zip(tensors.iter())
        .collect();
    let tmp = temporary_path(path);
    let written = (|| {
        let mut file = File::create(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        gguf_file::write(&mut file, &metadata, &named)?;
        file.sync_all().map_err(|e| TrainError::io(&tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
    })();
    if written.is_err() {
        // No half-written file is left behind (a full disk, say).
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Where [`write_adapter`] writes before renaming into place.
fn temporary_path(path: &Path) -> std::path::PathBuf {
    path.with_extension("gguf.tmp")
}

/// Checks, before any training, that an adapter can be written to `out`:
/// not a directory, not one of the run's inputs (`inputs`: the base, the
/// data), and its directory exists and takes a new file (tried by creating
/// and removing the temporary file [`write_adapter`] will use). A run
/// that could not save its result is refused before it starts.
pub fn check_output(out: &Path, inputs: &[&Path]) -> Result<(), TrainError> {
    let refuse = |detail: String| TrainError::Output {
        path: out.to_path_buf(),
        detail,
    };
    if out.is_dir() {
        return Err(refuse(
            "it is a directory; give a file path such as adapter.gguf".into(),
        ));
    }
    if let Ok(target) = out.canonicalize() {
        for input in inputs {
            if input.canonicalize().is_ok_and(|i| i == target) {
                return Err(refuse(format!(
                    "it is an input of this run ({}); choose another path so it is not overwritten",
                    input.display()
                )));
            }
        }
    }
    let tmp = temporary_path(out);
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp);
    match created {
        Ok(file) => {
            drop(file);
            std::fs::remove_file(&tmp).map_err(|e| refuse(format!("{}: {e}", tmp.display())))
        }
        // A leftover of an interrupted run: it will be replaced.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => {
            let dir = match out.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let detail = if dir.is_dir() {
                format!("{e} (check that {} is writable)", dir.display())
            } else {
                format!(
                    "the directory {} does not exist; create it first",
                    dir.display()
                )
            };
            Err(refuse(detail))
        }
    }
}

/// Reads an adapter written by [`write_adapter`] (or any f32/f16 llama.cpp
/// LoRA adapter): its architecture and its LoRA.
pub fn read_adapter(path: &Path, device: &Device) -> Result<(String, Lora), TrainError> {
    let err = |detail: String| TrainError::Base {
        path: path.to_path_buf(),
        detail,
    };
    let file = File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader).map_err(|e| err(candle_message(&e)))?;
    let s = |k: &str| match content.metadata.get(k) {
        Some(Value::String(v)) => Ok(v.clone()),
        _ => Err(err(format!("{k} is missing"))),
    };
    if s("general.type")? != "adapter" || s("adapter.type")? != "lora" {
        return Err(err("not a LoRA adapter".into()));
    }
    let arch = s("general.architecture")?;
    let alpha = match content.metadata.get("adapter.lora.alpha") {
        Some(Value::F32(a)) => *a,
        _ => return Err(err("adapter.lora.alpha is missing".into())),
    };
    let mut tensors = HashMap::new();
    let names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    for name in names {
        let q = content.tensor(&mut reader, &name, device)?;
        tensors.insert(name, q.dequantize(device)?);
    }
    let lora = Lora::from_named(&tensors, alpha).map_err(err)?;
    Ok((arch, lora))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::Target;

    fn tiny_lora() -> Lora {
        Lora::init(1, &[Target::Q], 2, 4.0, |_| (8, 8), 0, &Device::Cpu).unwrap()
    }

    #[test]
    fn an_adapter_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.gguf");
        write_adapter(&out, &tiny_lora(), "llama").unwrap();
        let (arch, lora) = read_adapter(&out, &Device::Cpu).unwrap();
        assert_eq!(arch, "llama");
        assert_eq!((lora.rank, lora.alpha), (2, 4.0));
    }

    #[test]
    fn a_failed_write_leaves_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory where the adapter should go: the rename fails.
        let out = dir.path().join("a.gguf");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("keep"), b"x").unwrap();
        assert!(write_adapter(&out, &tiny_lora(), "llama").is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["a.gguf"], "the temporary file is removed");
        assert!(out.join("keep").exists());
    }

    #[test]
    fn outputs_that_cannot_be_written_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("base.gguf");
        std::fs::write(&input, b"weights").unwrap();
        let refused = |out: &Path| check_output(out, &[&input]).unwrap_err().to_string();
        assert!(refused(dir.path()).contains("is a directory"));
        assert!(refused(&dir.path().join("x/a.gguf")).contains("does not exist"));
        assert!(refused(&input).contains("is an input of this run"));
        assert_eq!(std::fs::read(&input).unwrap(), b"weights");
        check_output(&dir.path().join("a.gguf"), &[&input]).unwrap();
        assert!(!dir.path().join("a.gguf.tmp").exists());
    }
}
