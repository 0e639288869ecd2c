//! `cargo xtask …`: squish's command line — every stage as a subcommand, and the pipeline.

mod cmd_bench;
mod cmd_bench_train;
mod cmd_diagnose;
mod cmd_eval;
mod cmd_generate;
mod cmd_import;
mod cmd_inspect;
mod cmd_quantize;
mod common;
mod pipeline;
mod report;
mod stage_baseline;
mod stage_data;
mod stage_final;
mod stage_kernels;
mod stage_quant;
mod svg;

use clap::{Parser, Subcommand};

/// squish: make tiny language models small and fast on CPUs.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Import a llama2.c (legacy v0) checkpoint and tokenizer.bin into a squish checkpoint.
    #[command(name = "import-llama2c")]
    ImportLlama2c(cmd_import::ImportArgs),
    /// Perplexity of a checkpoint on a text file.
    Eval(cmd_eval::EvalArgs),
    /// Generate text from a checkpoint.
    Generate(cmd_generate::GenerateArgs),
    /// Show a checkpoint's tensors, formats, bytes and metadata.
    Inspect(cmd_inspect::InspectArgs),
    /// Quantize a checkpoint to packed INT4/INT8.
    Quantize(cmd_quantize::QuantizeArgs),
    /// Training tokens/s of the SsmMoe baseline per scan formulation and burn backend.
    #[command(name = "bench-train")]
    BenchTrain(cmd_bench_train::BenchTrainArgs),
    /// What this CPU can do, measured: cores, caches, SIMD, GFLOPS, bandwidth, recommendations.
    Diagnose(cmd_diagnose::DiagnoseArgs),
    /// Run the stages of a pipeline config, skipping those that are up to date.
    Pipeline(pipeline::PipelineArgs),
    /// Benchmark the native runtime: prefill/decode tok/s, latency, peak RSS, kernel path.
    Bench(cmd_bench::BenchArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SQUISH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match &cli.cmd {
        Cmd::ImportLlama2c(a) => cmd_import::run(a),
        Cmd::Eval(a) => cmd_eval::run(a),
        Cmd::Generate(a) => cmd_generate::run(a),
        Cmd::Inspect(a) => cmd_inspect::run(a),
        Cmd::Quantize(a) => cmd_quantize::run(a),
        Cmd::Pipeline(a) => pipeline::run(a),
        Cmd::BenchTrain(a) => cmd_bench_train::run(a),
        Cmd::Diagnose(a) => cmd_diagnose::run(a),
        Cmd::Bench(a) => cmd_bench::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
