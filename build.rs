//! Build information for `giftstream --version`: the git commit, the rustc version and
//! the cargo profile, as compile-time environment variables. Never fails the build: out
//! of a git checkout (a source tarball) or without git, the commit reads `unknown`.

use std::process::Command;

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc = output(Command::new(rustc).arg("--version")).unwrap_or_else(|| "unknown".into());
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=GIFTSTREAM_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=GIFTSTREAM_RUSTC_VERSION={rustc}");
    println!("cargo:rustc-env=GIFTSTREAM_BUILD_PROFILE={profile}");
    // Run again when HEAD moves (a commit, a checkout), not on every source change.
    println!("cargo:rerun-if-changed=build.rs");
    // Only files that exist: cargo runs a script again at every build while a path
    // it watches is missing (a branch's ref is in packed-refs after `git gc`).
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    let watched = ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref());
    for path in watched {
        if let Some(p) = git(&["rev-parse", "--git-path", path])
            && std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
                .join(&p)
                .exists()
        {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}

/// `git ARGS` in the package's directory: its trimmed stdout, or `None` when git is
/// missing, this is not a checkout, or the command fails.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    output(Command::new("git").arg("-C").arg(dir).args(args))
}

fn output(command: &mut Command) -> Option<String> {
    let out = command.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
