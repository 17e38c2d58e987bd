//! Reading PEM files and writing key and certificate files safely.
//!
//! Every file is written to a temporary sibling first and then moved into
//! place, so a node never loads a half-written key. Without `force` the move
//! is a hard link, which fails if the target exists, so an existing file is
//! never replaced by accident even when two writers race.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::CertError;

/// File mode of private keys: readable and writable by the owner only.
pub(crate) const KEY_FILE_MODE: u32 = 0o600;

/// File mode of certificates, which are public.
pub(crate) const CERT_FILE_MODE: u32 = 0o644;

const CERTIFICATE_LABEL: &str = "CERTIFICATE";
const PRIVATE_KEY_LABEL: &str = "PRIVATE KEY";

/// Reads a PEM file and returns the DER bytes of each `CERTIFICATE` block, in
/// file order. Other blocks are skipped, and a file with no certificate block
/// is an error.
pub fn read_pem_certs(path: &Path) -> Result<Vec<Vec<u8>>, CertError> {
    let blocks = read_pem_blocks(path)?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|block| block.tag() == CERTIFICATE_LABEL)
        .map(pem::Pem::into_contents)
        .collect();

    if certs.is_empty() {
        return Err(CertError::MissingPemBlock {
            path: path.to_path_buf(),
            label: CERTIFICATE_LABEL,
        });
    }
    Ok(certs)
}

/// Reads a PEM file and returns the PKCS#8 DER bytes of its first
/// `PRIVATE KEY` block.
pub fn read_pem_key(path: &Path) -> Result<Vec<u8>, CertError> {
    let blocks = read_pem_blocks(path)?;
    blocks
        .into_iter()
        .find(|block| block.tag() == PRIVATE_KEY_LABEL)
        .map(pem::Pem::into_contents)
        .ok_or_else(|| CertError::MissingPemBlock {
            path: path.to_path_buf(),
            label: PRIVATE_KEY_LABEL,
        })
}

/// Reads a whole file, naming the path on failure.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, CertError> {
    fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_pem_blocks(path: &Path) -> Result<Vec<pem::Pem>, CertError> {
    let text = read_file(path)?;
    pem::parse_many(text).map_err(|source| CertError::BadPem {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `dir` and its parents if they are missing.
pub(crate) fn create_dir(dir: &Path) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(|source| CertError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Fails with [`CertError::AlreadyExists`] for the first path that exists,
/// unless `force` is set. Callers check every output before generating
/// anything so that a refused run leaves no partial output.
pub(crate) fn ensure_absent(paths: &[&Path], force: bool) -> Result<(), CertError> {
    if force {
        return Ok(());
    }
    match paths.iter().find(|path| path.exists()) {
        Some(path) => Err(CertError::AlreadyExists {
            path: path.to_path_buf(),
        }),
        None => Ok(()),
    }
}

/// Writes `contents` to `path` with permission bits `mode`.
///
/// The temporary file is created with `mode` already set, so a private key is
/// never readable by others, not even briefly. Without `force`, an existing
/// `path` is left untouched and reported as [`CertError::AlreadyExists`].
pub(crate) fn write_file(
    path: &Path,
    contents: &[u8],
    mode: u32,
    force: bool,
) -> Result<(), CertError> {
    let write_error = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };

    let temp_path = temp_sibling(path);
    write_new(&temp_path, contents, mode).map_err(write_error)?;

    let placed = if force {
        fs::rename(&temp_path, path)
    } else {
        fs::hard_link(&temp_path, path)
    };
    // The temporary name is gone after a rename. After a hard link, or after
    // a failure, it must be removed; an error doing so hides nothing the
    // caller can act on.
    let _ = fs::remove_file(&temp_path);

    match placed {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Err(CertError::AlreadyExists {
            path: path.to_path_buf(),
        }),
        Err(err) => Err(write_error(err)),
    }
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;

    let mut file = options.open(path)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written
}

fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_file_refuses_existing_without_force() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("data");
        write_file(&path, b"first", CERT_FILE_MODE, false)?;

        let err = write_file(&path, b"second", CERT_FILE_MODE, false).unwrap_err();
        assert!(matches!(err, CertError::AlreadyExists { .. }), "{err:?}");
        assert_eq!(fs::read(&path)?, b"first");

        write_file(&path, b"third", CERT_FILE_MODE, true)?;
        assert_eq!(fs::read(&path)?, b"third");

        let leftovers: Vec<_> = fs::read_dir(dir.path())?
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect::<Result<_, _>>()?;
        assert_eq!(leftovers, vec![std::ffi::OsString::from("data")]);
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn forced_key_rewrite_resets_mode() -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir()?;
        let path = dir.path().join("key");
        fs::write(&path, b"old")?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;

        write_file(&path, b"new", KEY_FILE_MODE, true)?;
        let mode = fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        Ok(())
    }

    #[test]
    fn read_pem_certs_names_missing_file() {
        let path = Path::new("/nonexistent/dispotify/ca.pem");
        let err = read_pem_certs(path).unwrap_err();
        assert!(matches!(err, CertError::Read { .. }), "{err:?}");
        assert!(
            err.to_string().contains("/nonexistent/dispotify/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn read_pem_key_requires_key_block() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("cert-only.pem");
        let block = pem::Pem::new("CERTIFICATE", vec![1, 2, 3]);
        fs::write(&path, pem::encode(&block))?;

        let err = read_pem_key(&path).unwrap_err();
        assert!(
            matches!(
                err,
                CertError::MissingPemBlock {
                    label: "PRIVATE KEY",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(read_pem_certs(&path)?, vec![vec![1, 2, 3]]);
        Ok(())
    }
}
