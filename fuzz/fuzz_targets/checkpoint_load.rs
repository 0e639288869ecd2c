//! Checkpoint bytes → strict load. Any input must give `Ok` or a clean `Err` (no panic, no
//! allocation beyond what the bytes hold); an accepted checkpoint must re-serialize and load back
//! to the same value (the writer and the reader agree on everything the reader accepts).
#![no_main]

use libfuzzer_sys::fuzz_target;
use squish_core::checkpoint;

fuzz_target!(|data: &[u8]| {
    let Ok(ckpt) = checkpoint::load_bytes(data) else {
        return;
    };
    let bytes = checkpoint::to_bytes(&ckpt).expect("an accepted checkpoint re-serializes");
    let back = checkpoint::load_bytes(&bytes).expect("a re-serialized checkpoint loads");
    assert_eq!(back, ckpt, "load → save → load changed the checkpoint");
});
