//! Llama tensor names as stored in checkpoints (framework-free; the runtime and the structural
//! description use them without burn).

/// Tensor names of layer `i`'s weights, as stored in checkpoints.
pub fn layer_tensor_names(i: usize) -> [String; 9] {
    [
        "attention_norm.weight",
        "attention.wq.weight",
        "attention.wk.weight",
        "attention.wv.weight",
        "attention.wo.weight",
        "ffn_norm.weight",
        "feed_forward.w1.weight",
        "feed_forward.w2.weight",
        "feed_forward.w3.weight",
    ]
    .map(|s| format!("layers.{i}.{s}"))
}
