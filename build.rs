//! Rebuilds the node when a migration is added, not only when one changes:
//! the migrations are embedded in the binary.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
