//! The burn CPU backend choice ([`CpuBackend`]).

use burn::tensor::Device;

/// Which burn CPU backend runs the models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CpuBackend {
    /// burn-flex (pure Rust; the default — see README for the measurement behind the choice).
    #[default]
    Flex,
    /// burn-ndarray (deprecated upstream in burn 0.22, kept selectable).
    Ndarray,
}

impl CpuBackend {
    /// Parses `flex` / `ndarray`.
    pub fn parse(s: &str) -> crate::Result<Self> {
        match s {
            "flex" => Ok(CpuBackend::Flex),
            "ndarray" => Ok(CpuBackend::Ndarray),
            other => Err(crate::Error::invalid(format!(
                "unknown backend `{other}` (expected flex or ndarray)"
            ))),
        }
    }
    /// The backend named by `$SQUISH_BACKEND`, else the default.
    pub fn from_env() -> crate::Result<Self> {
        match std::env::var("SQUISH_BACKEND") {
            Ok(s) => Self::parse(&s),
            Err(_) => Ok(Self::default()),
        }
    }
    /// A burn device for inference on this backend.
    pub fn device(self) -> Device {
        match self {
            CpuBackend::Flex => Device::flex(),
            // Deprecated upstream in burn 0.22, kept selectable on purpose (see README).
            #[allow(deprecated)]
            CpuBackend::Ndarray => Device::ndarray(),
        }
    }
    /// A burn device with autodiff enabled, for training.
    pub fn autodiff_device(self) -> Device {
        self.device().autodiff()
    }
}
