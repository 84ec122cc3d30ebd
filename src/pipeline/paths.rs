//! External inputs as the loader checks them: a path that does not exist is fine here (`plan`
//! shows what needs it, `run` refuses to start), but a symlink loop is an error in the file —
//! hashing would follow it until the system gives up — reported at the input. Looking for
//! loops inside a folder lists all of it (~0.3 s for 200,000 files), so only the commands that
//! check or hash inputs (`validate`, `plan`, `run`) do; the others look at the path alone.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::loader::Loader;
use super::yaml::Loc;

/// A symlink loop under an input: the link, and where it leads back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SymlinkLoop {
    pub link: PathBuf,
    /// The folder the link leads back to (`None` when the link never resolves: `a -> b -> a`).
    pub back_to: Option<PathBuf>,
}

/// The first symlink loop at `path` or, with `deep`, below it (followed as hashing follows it:
/// symlinks to folders are entered), or `None`. A path that does not exist has none.
pub(super) fn symlink_loop(path: &Path, deep: bool) -> Option<SymlinkLoop> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if is_loop(&e) => {
            return Some(SymlinkLoop {
                link: path.to_path_buf(),
                back_to: None,
            })
        }
        Err(_) => return None,
    };
    if !deep || !meta.is_dir() {
        return None;
    }
    let mut ancestors = vec![((meta.dev(), meta.ino()), path.to_path_buf())];
    walk(path, &mut ancestors)
}

fn is_loop(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

/// Depth-first through `dir`; `ancestors` are the folders (by device and inode) on the way here.
fn walk(dir: &Path, ancestors: &mut Vec<((u64, u64), PathBuf)>) -> Option<SymlinkLoop> {
    let entries = std::fs::read_dir(dir).ok()?;
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if !ft.is_symlink() && !ft.is_dir() {
            continue;
        }
        let p = e.path();
        let meta = if ft.is_symlink() {
            match std::fs::metadata(&p) {
                Ok(m) => m,
                Err(err) if is_loop(&err) => {
                    return Some(SymlinkLoop {
                        link: p,
                        back_to: None,
                    })
                }
                Err(_) => continue,
            }
        } else {
            match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            }
        };
        if !meta.is_dir() {
            continue;
        }
        let id = (meta.dev(), meta.ino());
        if let Some((_, back)) = ancestors.iter().find(|(a, _)| *a == id) {
            return Some(SymlinkLoop {
                link: p,
                back_to: Some(back.clone()),
            });
        }
        ancestors.push((id, p.clone()));
        let found = walk(&p, ancestors);
        ancestors.pop();
        if found.is_some() {
            return found;
        }
    }
    None
}

impl Loader {
    /// Report a symlink loop under the external input `path` (written `written` at `loc`), once
    /// per path. Paths in the message are shown as the file writes them.
    pub(super) fn check_external(
        &mut self,
        path: &Path,
        written: &str,
        input: &str,
        loc: Loc,
        key: &str,
    ) -> bool {
        if let Some(ok) = self.checked_inputs.get(path) {
            return *ok;
        }
        let found = symlink_loop(path, self.walk_inputs);
        if let Some(l) = &found {
            let shown = |p: &Path| match p.strip_prefix(path) {
                Ok(rest) if rest.as_os_str().is_empty() => written.to_string(),
                Ok(rest) => format!("{}/{}", written.trim_end_matches('/'), rest.display()),
                Err(_) => p.display().to_string(),
            };
            let how = match &l.back_to {
                Some(b) => format!("it leads back to {}", shown(b)),
                None => "it never resolves (too many levels of symbolic links)".into(),
            };
            self.err(
                Some(loc),
                format!(
                    "input `{input}`: {} is a symlink loop: {how}",
                    shown(&l.link)
                ),
                key,
                Some("remove or fix the link (hashing the input would follow it forever), or point the input elsewhere".into()),
            );
        }
        self.checked_inputs
            .insert(path.to_path_buf(), found.is_none());
        found.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_loops_at_and_below_a_path() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::os::unix::fs::symlink(d.join("b"), d.join("a")).unwrap();
        std::os::unix::fs::symlink(d.join("a"), d.join("b")).unwrap();
        assert_eq!(symlink_loop(&d.join("a"), false).unwrap().back_to, None);
        std::fs::create_dir_all(d.join("data/x")).unwrap();
        std::fs::write(d.join("data/x/f"), "1").unwrap();
        assert_eq!(symlink_loop(&d.join("data"), true), None);
        std::os::unix::fs::symlink("..", d.join("data/x/up")).unwrap();
        assert_eq!(
            symlink_loop(&d.join("data"), false),
            None,
            "not looked into"
        );
        let l = symlink_loop(&d.join("data"), true).unwrap();
        assert_eq!(l.link, d.join("data/x/up"));
        assert_eq!(l.back_to, Some(d.join("data")));
        assert_eq!(symlink_loop(&d.join("missing"), true), None);
    }
}
