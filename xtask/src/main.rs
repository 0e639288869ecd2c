//! `cargo xtask …`: squish's command line — every stage as a subcommand, and the pipeline.

mod bench_train_table;
mod cmd_bench;
mod cmd_bench_train;
mod cmd_diagnose;
mod cmd_eval;
mod cmd_frontier;
mod cmd_generate;
mod cmd_import;
mod cmd_inspect;
mod cmd_mixed;
mod cmd_prune;
mod cmd_quantize;
mod common;
mod pipeline;
mod report;
mod stage_baseline;
mod stage_data;
mod stage_final;
mod stage_kernels;
mod stage_mixed;
mod stage_prune;
mod stage_quant;
mod svg;

use clap::{Parser, Subcommand};

/// squish: make tiny language models small and fast on CPUs.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Threads for training, the fused scan and `mixed`'s sensitivity runs (0 = the physical
    /// cores). Results do not depend on it: same config and seed give the same checkpoint bytes
    /// for any thread count.
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
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
    /// Structured pruning (experts, channels, heads) with recovery by distillation.
    Prune(cmd_prune::PruneArgs),
    /// The pruning frontier: parameters vs PPL for width, depth and channel pruning at equal
    /// recovery tokens, and PPL vs recovery tokens (Markdown + SVG).
    #[command(name = "prune-frontier")]
    PruneFrontier(cmd_frontier::FrontierArgs),
    /// Per-tensor F16/INT8/INT4 from measured sensitivity under a size or ΔPPL budget.
    Mixed(cmd_mixed::MixedArgs),
    /// Training tokens/s: the SsmMoe baseline per scan formulation and burn backend, or with
    /// `--json` the SsmMoe baseline and stories260K QAT at 1 and 2 threads (6·N GFLOP/s).
    #[command(name = "bench-train")]
    BenchTrain(cmd_bench_train::BenchTrainArgs),
    /// What this CPU can do, measured: cores, caches, SIMD, GFLOPS, bandwidth, recommendations.
    Diagnose(cmd_diagnose::DiagnoseArgs),
    /// Run the stages of a pipeline config, skipping those that are up to date.
    Pipeline(pipeline::PipelineArgs),
    /// Benchmark the native runtime: prefill/decode tok/s, latency, peak RSS, kernel path.
    Bench(cmd_bench::BenchArgs),
}

/// The pipeline's log file, `<report_dir>/<run>_pipeline.log` (appended; info level and up).
fn pipeline_log(a: &pipeline::PipelineArgs) -> Option<std::fs::File> {
    let cfg = pipeline::PipelineConfig::load(&a.config).ok()?;
    std::fs::create_dir_all(&cfg.run.report_dir).ok()?;
    let path = cfg
        .run
        .report_dir
        .join(format!("{}_pipeline.log", cfg.run.name));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ok()
}

fn main() {
    use tracing_subscriber::prelude::*;
    let cli = Cli::parse();
    squish_core::heap::keep_freed_memory();
    squish_core::threads::set_threads(match cli.threads {
        0 => squish_core::threads::physical_cores(),
        n => n,
    });
    let log_file = match &cli.cmd {
        Cmd::Pipeline(a) if !a.dry_run => pipeline_log(a),
        _ => None,
    };
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_env("SQUISH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        );
    let file_layer = log_file.map(|f| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .init();
    let result = match &cli.cmd {
        Cmd::ImportLlama2c(a) => cmd_import::run(a),
        Cmd::Eval(a) => cmd_eval::run(a),
        Cmd::Generate(a) => cmd_generate::run(a),
        Cmd::Inspect(a) => cmd_inspect::run(a),
        Cmd::Quantize(a) => cmd_quantize::run(a),
        Cmd::Mixed(a) => cmd_mixed::run(a),
        Cmd::Prune(a) => cmd_prune::run(a),
        Cmd::PruneFrontier(a) => cmd_frontier::run(a),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The global `--threads` reaches every command that trains: a subcommand flag of the same
    /// name would shadow it (clap hands the subcommand's default up), and `xtask mixed`'s QAT
    /// trained on one thread that way.
    #[test]
    fn training_commands_keep_the_global_thread_budget() {
        let training: [&[&str]; 4] = [
            &["mixed", "--checkpoint", "c", "--out", "o"],
            &["quantize", "--checkpoint", "c", "--out", "o"],
            &["prune", "--checkpoint", "c", "--out", "o"],
            &["pipeline"],
        ];
        for args in training {
            let parse = |extra: &[&str]| {
                let v = ["cargo xtask"].iter().chain(args).chain(extra).copied();
                Cli::try_parse_from(v).unwrap_or_else(|e| panic!("{args:?}: {e}"))
            };
            assert_eq!(parse(&[]).threads, 0, "{args:?}");
            assert_eq!(parse(&["--threads", "3"]).threads, 3, "{args:?}");
        }
    }
}
