//! Link the shim as a non-PIE executable.
//!
//! The shim links libcontainer (for its forked helpers) and so carries
//! ~400 KiB of `.data.rel.ro` and ~500 KiB of relative relocations. In a PIE,
//! the dynamic loader applies all of them at every start: each shim would
//! read the relocation table and dirty every `.data.rel.ro` page, ~700 KiB
//! of resident memory per container, most of it private. Linked at a fixed
//! address there is nothing to relocate and untouched pages stay untouched.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
