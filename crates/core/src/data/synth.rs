//! A small built-in story generator, used only when no TinyStories corpus can be found (a fresh
//! machine without `../shared/data`). Its stories are simple, grammatical and deterministic; any
//! number measured on them is **not** a TinyStories number, and callers say so loudly.

use super::Rng;

const NAMES: &[&str] = &[
    "Lily", "Tom", "Mia", "Ben", "Sara", "Max", "Anna", "Sam", "Lucy", "Tim", "Emma", "Jack",
];
const ANIMALS: &[&str] = &[
    "cat", "dog", "bird", "bunny", "frog", "duck", "bear", "fox", "mouse", "puppy",
];
const PLACES: &[&str] = &[
    "the park",
    "the garden",
    "the forest",
    "the beach",
    "the house",
    "the school",
    "the farm",
    "the lake",
];
const THINGS: &[&str] = &[
    "ball", "kite", "box", "flower", "toy car", "hat", "book", "cake", "tree", "boat", "stone",
    "shell",
];
const ADJS: &[&str] = &[
    "big", "small", "red", "blue", "shiny", "soft", "happy", "old", "funny", "pretty", "green",
    "little",
];
const FEELINGS: &[&str] = &[
    "happy",
    "sad",
    "scared",
    "excited",
    "proud",
    "tired",
    "surprised",
    "angry",
];
const VERBS: &[&str] = &[
    "play with",
    "look at",
    "find",
    "share",
    "carry",
    "fix",
    "hide",
    "clean",
];

fn pick<'a>(rng: &mut Rng, xs: &[&'a str]) -> &'a str {
    xs[rng.below(xs.len())]
}

/// One story from `rng`.
pub fn story(rng: &mut Rng) -> String {
    let name = pick(rng, NAMES);
    let friend = pick(rng, NAMES);
    let animal = pick(rng, ANIMALS);
    let place = pick(rng, PLACES);
    let thing = pick(rng, THINGS);
    let adj = pick(rng, ADJS);
    let verb = pick(rng, VERBS);
    let feel = pick(rng, FEELINGS);
    let feel2 = pick(rng, FEELINGS);
    let mut s = match rng.below(3) {
        0 => format!(
            "Once upon a time, there was a little {animal} named {name}. {name} lived near {place}."
        ),
        1 => format!("One day, {name} went to {place} with {friend}."),
        _ => format!("Once there was a {adj} {animal}. It liked to play in {place} every day."),
    };
    s.push_str(&format!(
        " {name} saw a {adj} {thing}. {name} wanted to {verb} the {thing}."
    ));
    match rng.below(3) {
        0 => s.push_str(&format!(
            "\n{friend} said, \"Can I {verb} the {thing} too?\" {name} was {feel} and said, \"Yes, we can {verb} it together!\"\nThey had a lot of fun. {name} and {friend} became good friends."
        )),
        1 => s.push_str(&format!(
            "\nBut the {thing} was too high. {name} felt {feel}. Then a kind {animal} came to help. \"Thank you!\" said {name}.\nFrom that day on, {name} always helped others too."
        )),
        _ => s.push_str(&format!(
            "\nSuddenly, it started to rain. {name} was {feel2} and ran home with the {thing}. Mom gave {name} a warm hug.\n{name} learned that it is good to be careful."
        )),
    }
    s
}

/// `n` stories from `seed`, in the TinyStories V1 text format (`story\n<|endoftext|>\n`).
pub fn corpus(n: usize, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let mut out = String::new();
    for _ in 0..n {
        out.push_str(&story(&mut rng));
        out.push('\n');
        out.push_str(super::STORY_SEPARATOR);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_is_deterministic_and_splits_into_stories() {
        let a = corpus(50, 3);
        assert_eq!(a, corpus(50, 3));
        assert_ne!(a, corpus(50, 4));
        assert_eq!(super::super::split_stories(&a).len(), 50);
    }
}
