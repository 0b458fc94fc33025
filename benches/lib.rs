//! Criterion benches for palisade; the benches are the `[[bench]]` targets of this package.
