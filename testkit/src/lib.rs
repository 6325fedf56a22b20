//! What Fala's tests and benchmarks need besides the program itself: a seeded, deterministic
//! UDP impairment relay ([`netsim`]), since the kernel here has no netem. Not part of the
//! client's library: tests use it as a dev-dependency, the bench as a dependency.

#![forbid(unsafe_code)]

pub mod netsim;
