//! `cargo xtask generate`: text from a checkpoint (llama2.c's loop and sampler).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use squish_core::generate::{Until, generate_until};
use squish_core::model::CpuBackend;
use squish_core::sample::Sampler;

use crate::cmd_bench::Engine;
use crate::common::{burn_model, load_checkpoint};

/// Arguments of `generate`.
#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Checkpoint (.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Prompt text (empty: start from BOS).
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Positions to run at most, as llama2.c's `-n`; generation stops earlier at the end of the
    /// story (a BOS, as llama2.c's `run.c`, or an EOS) unless --ignore-eos.
    #[arg(long, default_value_t = 256)]
    pub steps: usize,
    /// Run exactly --steps positions: a story end is printed as a blank line and the model
    /// goes on with a new story (as llama.cpp's --ignore-eos).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Temperature (0 = greedy).
    #[arg(long, default_value_t = 1.0, value_parser = crate::common::non_negative)]
    pub temperature: f32,
    /// Top-p.
    #[arg(long, default_value_t = 0.9, value_parser = crate::common::unit_interval)]
    pub topp: f32,
    /// RNG seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// burn CPU backend (flex or ndarray).
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Inference engine: the native runtime (default) or the burn reference.
    #[arg(long, value_enum, default_value_t = Engine::Native)]
    pub engine: Engine,
}

/// Generates text and returns it as bytes (what `run` prints, without the final newline).
pub fn generate_text(a: &GenerateArgs) -> Result<Vec<u8>> {
    let loaded = load_checkpoint(&a.checkpoint)?;
    let model;
    let mut burn_stepper;
    let mut native;
    let stepper: &mut dyn squish_core::generate::StepModel = match a.engine {
        Engine::Burn => {
            model = burn_model(&loaded.ckpt, CpuBackend::parse(&a.backend)?)?;
            burn_stepper = model.stepper();
            burn_stepper.as_mut()
        }
        Engine::Native => {
            native = squish_kernels::runtime::Runtime::load(&loaded.ckpt)?;
            &mut native
        }
    };
    let mut sampler = Sampler::new(a.temperature, a.topp, a.seed);
    let mut out = Vec::new();
    let until = if a.ignore_eos {
        Until::Steps
    } else {
        Until::StoryEnd
    };
    generate_until(
        stepper,
        &loaded.tokenizer,
        &a.prompt,
        a.steps,
        until,
        &mut sampler,
        |piece| out.extend_from_slice(piece),
    )?;
    Ok(out)
}

/// Entry point of `generate`: prints the text and a newline, like llama2.c.
pub fn run(a: &GenerateArgs) -> Result<()> {
    let text = generate_text(a)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&text)?;
    stdout.write_all(b"\n")?;
    Ok(())
}
