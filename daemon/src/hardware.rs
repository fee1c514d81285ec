//! What the machine has: physical cores, total and free RAM (sysinfo), and
//! GPUs with their free memory (NVML, only with the `nvml` feature; a
//! missing driver or library means "no GPU", never an error).

use std::sync::Mutex;

/// One GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpu {
    pub index: u32,
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
}

/// The detected hardware; memory figures are refreshed on each call.
#[derive(Debug)]
pub struct Hardware {
    system: Mutex<sysinfo::System>,
    pub physical_cores: u32,
    #[cfg(feature = "nvml")]
    nvml: Option<nvml_wrapper::Nvml>,
}

impl Default for Hardware {
    fn default() -> Self {
        Self::detect()
    }
}

impl Hardware {
    /// Probes the machine.
    pub fn detect() -> Hardware {
        #[cfg(feature = "nvml")]
        let nvml = match nvml_wrapper::Nvml::init() {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::info!("no NVIDIA GPU found through NVML: {e}");
                None
            }
        };
        Hardware {
            system: Mutex::new(sysinfo::System::new()),
            physical_cores: crate::config::physical_cores(),
            #[cfg(feature = "nvml")]
            nvml,
        }
    }

    /// RAM the system can give without swapping, in bytes.
    pub fn available_ram(&self) -> u64 {
        let mut s = self.system.lock().unwrap_or_else(|e| e.into_inner());
        s.refresh_memory();
        s.available_memory()
    }

    /// The CPU's model name as the OS reports it (empty when unknown).
    pub fn cpu_model(&self) -> String {
        use sysinfo::{CpuRefreshKind, RefreshKind};
        let s = sysinfo::System::new_with_specifics(
            RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing()),
        );
        s.cpus()
            .first()
            .map(|c| c.brand().trim().to_owned())
            .unwrap_or_default()
    }

    /// Total RAM in bytes.
    pub fn total_ram(&self) -> u64 {
        let mut s = self.system.lock().unwrap_or_else(|e| e.into_inner());
        s.refresh_memory();
        s.total_memory()
    }

    /// GPUs found (none without the `nvml` feature).
    pub fn gpus(&self) -> Vec<Gpu> {
        #[cfg(feature = "nvml")]
        if let Some(nvml) = &self.nvml {
            let count = nvml.device_count().unwrap_or(0);
            return (0..count)
                .filter_map(|index| {
                    let device = nvml.device_by_index(index).ok()?;
                    let memory = device.memory_info().ok()?;
                    Some(Gpu {
                        index,
                        name: device.name().unwrap_or_else(|_| "NVIDIA GPU".into()),
                        total_bytes: memory.total,
                        free_bytes: memory.free,
                    })
                })
                .collect();
        }
        Vec::new()
    }

    /// Free memory of the first GPU, if one is found.
    pub fn free_vram(&self) -> Option<u64> {
        self.gpus().first().map(|g| g.free_bytes)
    }
}
