//! Where a run computes: [`DeviceChoice`] (`auto`, `cpu`, `cuda[:N]`,
//! `metal[:N]`), opened into a candle [`Device`] with a clear error when
//! this build lacks the backend or the machine lacks the GPU; the memory
//! that device has free for the memory check; and [`Precision`], the dtype
//! the frozen base is kept and multiplied in there.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};

use crate::error::TrainError;

/// The device a run asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A CUDA or Metal GPU when this build has that backend and the machine
    /// has one, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// The CUDA GPU of this ordinal (needs the `cuda` feature).
    Cuda(usize),
    /// The Metal GPU of this ordinal (needs the `metal` feature).
    Metal(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        let (kind, ordinal) = match s.split_once(':') {
            Some((k, n)) => {
                let n = n.parse::<usize>().map_err(|_| {
                    format!("'{s}': the GPU number after ':' must be a whole number, as in cuda:0")
                })?;
                (k, Some(n))
            }
            None => (s.as_str(), None),
        };
        match (kind, ordinal) {
            ("auto", None) => Ok(DeviceChoice::Auto),
            ("cpu", None) => Ok(DeviceChoice::Cpu),
            ("cuda", n) => Ok(DeviceChoice::Cuda(n.unwrap_or(0))),
            ("metal", n) => Ok(DeviceChoice::Metal(n.unwrap_or(0))),
            _ => Err(format!(
                "unknown device '{s}' (expected auto, cpu, cuda, cuda:N, metal or metal:N)"
            )),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

impl DeviceChoice {
    /// Opens the device. `Auto` never fails; an explicit GPU fails when
    /// this build lacks its backend or the GPU cannot be opened.
    pub fn open(self) -> Result<Device, TrainError> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto => Ok(auto()),
            DeviceChoice::Cuda(n) => open_cuda(n),
            DeviceChoice::Metal(n) => open_metal(n),
        }
    }
}

fn auto() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    #[cfg(feature = "metal")]
    if let Ok(d) = Device::new_metal(0) {
        return d;
    }
    Device::Cpu
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device, TrainError> {
    Device::new_cuda(ordinal).map_err(|e| {
        TrainError::Device(format!(
            "cannot open CUDA GPU {ordinal}: {e} (is the NVIDIA driver loaded, and are the CUDA \
             libraries on the library path?)"
        ))
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<Device, TrainError> {
    Err(TrainError::Device(format!(
        "cuda:{ordinal} was asked for, but this build has no CUDA support (build with \
         `--features cuda`, or use --device cpu)"
    )))
}

#[cfg(feature = "metal")]
fn open_metal(ordinal: usize) -> Result<Device, TrainError> {
    Device::new_metal(ordinal)
        .map_err(|e| TrainError::Device(format!("cannot open Metal GPU {ordinal}: {e}")))
}

#[cfg(not(feature = "metal"))]
fn open_metal(ordinal: usize) -> Result<Device, TrainError> {
    Err(TrainError::Device(format!(
        "metal:{ordinal} was asked for, but this build has no Metal support (build with \
         `--features metal` on macOS, or use --device cpu)"
    )))
}

/// A short name of an open device: `cpu`, `cuda:0`, `metal:0`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Bytes free for a run on `device`: the memory the system reports
/// available for the CPU (Linux), the GPU's free memory for CUDA, and for
/// Metal the working set the GPU recommends less what it has allocated.
/// `None` when it cannot be told, and the memory check is then skipped.
pub fn free_memory(device: &Device) -> Option<u64> {
    match device {
        Device::Cpu => available_memory(),
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => d
            .cuda_stream()
            .context()
            .mem_get_info()
            .ok()
            .map(|(free, _total)| free as u64),
        #[cfg(feature = "metal")]
        Device::Metal(d) => {
            let gpu = d.device();
            let budget = gpu.recommended_max_working_set_size() as u64;
            Some(budget.saturating_sub(gpu.current_allocated_size() as u64))
        }
        _ => None,
    }
}

/// The dtype of the frozen base's weights and products (LoRA parameters,
/// norms, softmaxes and the loss stay f32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 on the CPU, bf16 on CUDA, f16 on Metal.
    #[default]
    Auto,
    F32,
    Bf16,
    F16,
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Precision::Auto),
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" | "fp16" => Ok(Precision::F16),
            other => Err(format!(
                "unknown precision '{other}': expected auto, f32, bf16 or f16"
            )),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

impl Precision {
    /// The dtype on `device`. The CPU trains in f32 only (its kernels are
    /// f32, and half-precision products there are slower, not faster).
    pub fn resolve(self, device: &Device) -> Result<DType, TrainError> {
        match (self, device) {
            (Precision::F32, _) | (Precision::Auto, Device::Cpu) => Ok(DType::F32),
            (Precision::Bf16 | Precision::F16, Device::Cpu) => Err(TrainError::Config(format!(
                "--precision {self} needs a GPU: the CPU trains in f32 (use --precision f32 or auto, or --device cuda/metal)"
            ))),
            (Precision::Auto, Device::Cuda(_)) | (Precision::Bf16, _) => Ok(DType::BF16),
            (Precision::Auto, Device::Metal(_)) | (Precision::F16, _) => Ok(DType::F16),
        }
    }
}

/// The name `--precision` and reports use for `dtype`.
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "f32",
    }
}

/// Memory the system reports available (Linux), in bytes.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print_back() {
        for (text, choice) in [
            ("auto", DeviceChoice::Auto),
            ("CPU", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:1", DeviceChoice::Cuda(1)),
            ("metal", DeviceChoice::Metal(0)),
        ] {
            assert_eq!(text.parse::<DeviceChoice>().unwrap(), choice);
            assert_eq!(choice.to_string().parse::<DeviceChoice>().unwrap(), choice);
        }
        for bad in ["gpu", "cuda:x", "cpu:0", "auto:1", ""] {
            let e = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(e.contains("cuda"), "{bad}: {e}");
        }
    }

    #[test]
    fn precisions_parse_and_resolve_per_device() {
        for (text, p) in [
            ("auto", Precision::Auto),
            ("F32", Precision::F32),
            ("bf16", Precision::Bf16),
            ("fp16", Precision::F16),
        ] {
            assert_eq!(text.parse::<Precision>().unwrap(), p);
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        let e = "f8".parse::<Precision>().unwrap_err();
        assert!(e.contains("auto, f32, bf16 or f16"), "{e}");
        let cpu = Device::Cpu;
        assert_eq!(Precision::Auto.resolve(&cpu).unwrap(), DType::F32);
        assert_eq!(Precision::F32.resolve(&cpu).unwrap(), DType::F32);
        for half in [Precision::Bf16, Precision::F16] {
            let e = half.resolve(&cpu).unwrap_err().to_string();
            assert!(
                e.contains("needs a GPU") && e.contains("--precision f32"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_cpu_opens_and_reports_memory() {
        let d = DeviceChoice::Cpu.open().unwrap();
        assert_eq!(device_name(&d), "cpu");
        assert!(free_memory(&d).unwrap() > 1 << 20);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_gpu_this_build_lacks_is_refused_by_name() {
        let e = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
        assert!(
            e.contains("no CUDA support") && e.contains("--features cuda"),
            "{e}"
        );
    }
}
