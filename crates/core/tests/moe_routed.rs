//! The routed MoE (per expert: gather its tokens → SwiGLU → weighted scatter-add) against the
//! dense formulation (every expert on every token, unchosen gates 0): the same loss and the same
//! gradient of every parameter, within 1e-5 (max |routed − dense| / max(1, max |dense|) per tensor),
//! for top-1 and top-2 routing, including a layer where an expert gets no token.

use burn::module::{ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use squish_core::checkpoint::Weights;
use squish_core::config::SsmMoeConfig;
use squish_core::model::CpuBackend;
use squish_core::model::moe_routed::MoeMode;
use squish_core::model::ssm_moe::{ScanMode, SsmMoe};
use squish_core::model::ssm_moe_weights::{init_weights, router_name};
use squish_core::model::tensor_to_vec;
use squish_core::train::cross_entropy;

const BOUND: f32 = 1e-5;

fn cfg(n_experts: usize, top_k: usize) -> SsmMoeConfig {
    SsmMoeConfig {
        d_model: 32,
        n_layers: 2,
        vocab_size: 64,
        seq_len: 64,
        d_inner: 48,
        d_state: 8,
        d_conv: 4,
        dt_rank: 4,
        n_experts,
        top_k,
        expert_hidden: 24,
        norm_eps: 1e-5,
    }
}

/// Replaces every parameter by its gradient (zeros where it has none).
struct GradOf(GradientsParams);

impl ModuleMapper for GradOf {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let w = param.val().inner();
        Param::from_tensor(match self.0.get::<D>(param.id) {
            Some(g) => g.inner(),
            None => w.zeros_like(),
        })
    }
}

/// Loss (cross-entropy + balance) and every parameter's gradient by checkpoint name.
fn loss_and_grads(c: &SsmMoeConfig, w: &Weights, mode: MoeMode) -> (f32, Weights) {
    let device = CpuBackend::Flex.autodiff_device();
    let mut m = SsmMoe::from_weights(c, w, &device, ScanMode::Fused).unwrap();
    m.moe = mode;
    let toks: Vec<Vec<u32>> = (0..3)
        .map(|r| {
            (0..40)
                .map(|i| ((i * 13 + r * 7 + 3) % 64) as u32)
                .collect()
        })
        .collect();
    let inputs: Vec<Vec<u32>> = toks.iter().map(|t| t[..39].to_vec()).collect();
    let targets: Vec<Vec<u32>> = toks.iter().map(|t| t[1..].to_vec()).collect();
    let out = m.forward(&inputs).unwrap();
    let loss = cross_entropy(out.logits, &targets) + out.balance_loss * 0.5;
    let value = tensor_to_vec(loss.clone()).unwrap()[0];
    let g = GradientsParams::from_grads(loss.backward(), &m);
    let grads = burn::module::Module::map(m, &mut GradOf(g))
        .to_weights()
        .unwrap();
    (value, grads)
}

fn check(c: &SsmMoeConfig, w: &Weights) {
    let (l_dense, g_dense) = loss_and_grads(c, w, MoeMode::Dense);
    let (l_routed, g_routed) = loss_and_grads(c, w, MoeMode::Routed);
    assert!(
        (l_dense - l_routed).abs() <= BOUND * l_dense.abs().max(1.0),
        "loss: dense {l_dense}, routed {l_routed}"
    );
    assert_eq!(g_dense.len(), g_routed.len());
    let mut nonzero = 0;
    for (name, want) in g_dense.iter() {
        let (want, got) = (want.to_f32(), g_routed.get(name).unwrap().to_f32());
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        let diff = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            diff / scale <= BOUND,
            "{name}: max difference {diff} (scale {scale})"
        );
        nonzero += usize::from(want.iter().any(|&v| v != 0.0));
    }
    assert!(
        nonzero > g_dense.len() / 2,
        "most gradients are zero: the test is vacuous"
    );
}

#[test]
fn routed_moe_matches_dense_top2_and_top1() {
    for (e, k, seed) in [(4, 2, 3), (3, 1, 4), (2, 2, 5)] {
        let c = cfg(e, k);
        check(&c, &init_weights(&c, seed).unwrap());
    }
}

#[test]
fn routed_moe_matches_dense_when_an_expert_gets_no_token() {
    let c = cfg(4, 1);
    let mut w = init_weights(&c, 8).unwrap();
    // Layer 0's router: row 1 = −row 0 and row 3 = 0, so logit 3 (= 0) never exceeds
    // max(logit 0, logit 1) = |logit 0|: with top-1, expert 3 is chosen by no token.
    let name = router_name(0);
    let t = w.get_mut(&name).unwrap();
    let mut v = t.to_f32(); // [E, d_model]
    let d = c.d_model;
    for j in 0..d {
        v[d + j] = -v[j];
        v[3 * d + j] = 0.0;
    }
    *t = squish_core::checkpoint::WeightTensor::f32(vec![4, c.d_model], v).unwrap();
    check(&c, &w);
}
