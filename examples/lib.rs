//! Runnable programs showing palisade stacks; see the `[[example]]` entries of this package.
