//! The folder walk that every folder of files shares (images, audio): which files a folder
//! holds, their labels, and what happens to the bad ones.
//!
//! - Sub-folders are classes, labelled 0.. in sorted name order (files inside them are found
//!   at any depth, a folder's own files before its sub-folders'); a folder with no
//!   sub-folders is unlabelled. A folder holding both class folders and files is an error.
//! - A folder holding `train/` and `test/` (or `val/`) is read by split: [`Split::Train`] reads
//!   `train/`, [`Split::Test`] `test/` or `val/`, [`Split::Unlabeled`] `unlabeled/`. A plain
//!   folder ignores the split.
//! - Hidden files and folders (names starting with '.') and files the [`FileKind`] does not
//!   claim are ignored.
//! - Symbolic links are followed, to files and to folders, but each real folder is read once
//!   (by its canonical path): a link to a folder inside the folder read (`.`, `..`, another
//!   class) is skipped, as that folder is read where it is; so is a link to a folder holding
//!   the folder read, or to one already read through another link. The links skipped are
//!   kept ([`Listing::skipped_links`]).
//! - [`Listing::keep`] applies the bad-file policy to the checks made at open;
//!   [`BadFiles`] keeps what was skipped, at open and later while decoding.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use walkdir::WalkDir;

use super::{data_err, OnBadFile, Split};
use crate::error::Result;

/// A kind of file a folder holds: which files it claims, and what messages call them.
pub(crate) struct FileKind {
    /// "image", "audio file".
    pub one: &'static str,
    /// "images", "audio files".
    pub many: &'static str,
    /// For the message about a folder without any: "e.g. .png, .jpg".
    pub examples: &'static str,
    /// What a class folder holds, for the message about stray files: "class folder",
    /// "speaker folder".
    pub class_folder: &'static str,
    /// Whether a file (by its name) is of this kind.
    pub claims: fn(&Path) -> bool,
}

/// The files of one folder (after choosing the split) and their classes.
pub(crate) struct Listing {
    /// The folder read, after choosing the split.
    pub root: PathBuf,
    /// Files of the kind, relative to `root`, in listing order (classes in label order).
    pub files: Vec<PathBuf>,
    /// One class per file, or None for a flat folder.
    pub labels: Option<Vec<u32>>,
    /// Sub-folder names, index = label.
    pub classes: Vec<String>,
    /// Links to folders not followed (each real folder is read once), relative to `root`.
    pub skipped_links: Vec<PathBuf>,
}

impl Listing {
    /// Lists `path` (after choosing `split`): an error names the folder when it is missing,
    /// not a folder, mixes class folders with files, or holds no file of the kind.
    pub fn read(path: &Path, split: Split, kind: &FileKind) -> Result<Listing> {
        if !path.exists() {
            return Err(data_err(path, "no such folder"));
        }
        if !path.is_dir() {
            return Err(data_err(path, "not a folder"));
        }
        let root = split_folder(path, split)?;
        let mut walk = Walk::new(&root, kind.claims)?;
        let (dirs, root_files) = walk.list()?;

        let (files, labels, classes) = if dirs.is_empty() {
            (root_files, None, Vec::new())
        } else {
            if let Some(stray) = root_files.first() {
                return Err(data_err(
                    &root,
                    format!(
                        "holds both class folders ({}) and {} ({}); put every {} in a {}, or \
                         use a flat folder for unlabelled {}",
                        dirs.join(", "),
                        kind.many,
                        stray.display(),
                        kind.one,
                        kind.class_folder,
                        kind.many
                    ),
                ));
            }
            let mut files = Vec::new();
            let mut labels = Vec::new();
            for (class, dir) in dirs.iter().enumerate() {
                for file in walk.files(dir)? {
                    files.push(file);
                    labels.push(class as u32);
                }
            }
            (files, Some(labels), dirs)
        };
        if files.is_empty() {
            let where_ = if classes.is_empty() {
                String::new()
            } else {
                format!(" in its {} class folders", classes.len())
            };
            return Err(data_err(
                &root,
                format!(
                    "no {}{where_} (looked for files a decoder reads, {})",
                    kind.many, kind.examples
                ),
            ));
        }
        Ok(Listing {
            root,
            files,
            labels,
            classes,
            skipped_links: walk.skipped,
        })
    }

    /// Class of file `i`, or None for a flat folder.
    pub fn label(&self, i: usize) -> Option<u32> {
        self.labels.as_ref().map(|l| l[i])
    }

    /// Number of classes, or None for a flat folder.
    pub fn num_classes(&self) -> Option<usize> {
        self.labels.as_ref().map(|_| self.classes.len())
    }

    /// "a/b/c.wav" for file `i`, whatever the platform's separator.
    pub fn name(&self, i: usize) -> String {
        let parts: Vec<_> = self.files[i].iter().map(|p| p.to_string_lossy()).collect();
        parts.join("/")
    }

    pub fn class_name(&self, class: u32) -> Option<String> {
        self.classes.get(class as usize).cloned()
    }

    /// The end of a folder set's description: "3 speakers, 2 skipped, 1 folder links
    /// skipped (...)", the classes called `classes` ("classes", "speakers").
    pub fn describe_rest(&self, classes: &str, skipped: usize) -> String {
        let classes = match self.num_classes() {
            Some(n) => format!("{n} {classes}"),
            None => "unlabelled".into(),
        };
        let skipped = match skipped {
            0 => String::new(),
            n => format!(", {n} skipped"),
        };
        let links = match self.skipped_links.len() {
            0 => String::new(),
            n => format!(
                ", {n} folder links skipped (loops, or folders read elsewhere; the first: {})",
                self.skipped_links[0].display()
            ),
        };
        format!("{classes}{skipped}{links}")
    }

    /// Applies `policy` to one check per file (in file order): keeps the files that passed,
    /// with their values, and under Skip drops the others into the returned [`BadFiles`];
    /// under Stop the first failure is the error. All files bad is an error under both.
    pub fn keep<T>(
        &mut self,
        checks: Vec<Result<T>>,
        policy: OnBadFile,
        kind: &FileKind,
    ) -> Result<(Vec<T>, BadFiles)> {
        assert_eq!(checks.len(), self.files.len(), "one check per file");
        let mut at_open = Vec::new();
        let mut values = Vec::with_capacity(checks.len());
        let mut keep = Vec::with_capacity(checks.len());
        for (file, check) in self.files.iter().zip(checks) {
            match check {
                Ok(value) => {
                    values.push(value);
                    keep.push(true);
                }
                Err(e) if policy == OnBadFile::Skip => {
                    at_open.push((file.clone(), e.to_string()));
                    keep.push(false);
                }
                Err(e) => return Err(e),
            }
        }
        let mut k = keep.iter();
        self.files.retain(|_| *k.next().unwrap());
        if let Some(l) = self.labels.as_mut() {
            let mut k = keep.iter();
            l.retain(|_| *k.next().unwrap());
        }
        if self.files.is_empty() {
            return Err(data_err(
                &self.root,
                format!(
                    "all {} {} were skipped as bad, the first: {}",
                    at_open.len(),
                    kind.many,
                    at_open[0].1
                ),
            ));
        }
        Ok((
            values,
            BadFiles {
                at_open,
                later: Mutex::new(BTreeMap::new()),
            },
        ))
    }
}

/// The files skipped under [`OnBadFile::Skip`]: at open, and those that failed later, while
/// decoding (a file cut short after its header, or changed since open).
pub(crate) struct BadFiles {
    /// Dropped at open, relative to the root, with why.
    at_open: Vec<(PathBuf, String)>,
    /// Failed after open, by index into the kept files, with why.
    later: Mutex<BTreeMap<usize, String>>,
}

impl BadFiles {
    /// Why file `i` failed before, if it did.
    pub fn get(&self, i: usize) -> Option<String> {
        self.later.lock().unwrap().get(&i).cloned()
    }

    /// Notes that file `i` failed to decode, with why.
    pub fn record(&self, i: usize, why: &str) {
        self.later.lock().unwrap().insert(i, why.to_string());
    }

    pub fn count(&self) -> usize {
        self.at_open.len() + self.later.lock().unwrap().len()
    }

    /// Every file skipped so far, with why; `files` are the kept files the indices name.
    pub fn list(&self, files: &[PathBuf]) -> Vec<(PathBuf, String)> {
        let mut all = self.at_open.clone();
        for (&i, why) in self.later.lock().unwrap().iter() {
            all.push((files[i].clone(), why.clone()));
        }
        all
    }
}

/// The folder to read for `split`: `root/train` etc. when `root` is split into train and
/// test (or val), else `root` itself.
fn split_folder(root: &Path, split: Split) -> Result<PathBuf> {
    let (dirs, _) = Walk::new(root, |_| false)?.list()?;
    let has = |name: &str| dirs.iter().any(|d| d == name);
    if !(has("train") && (has("test") || has("val"))) {
        return Ok(root.to_path_buf());
    }
    let name = match split {
        Split::Train => "train",
        Split::Test if has("test") => "test",
        Split::Test => "val",
        Split::Unlabeled if has("unlabeled") => "unlabeled",
        Split::Unlabeled => {
            return Err(data_err(
                root,
                "is split into train/ and test/ but has no unlabeled/",
            ))
        }
    };
    Ok(root.join(name))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// The listing of one folder and its class folders, each real folder read once.
struct Walk {
    /// The folder read, as given.
    root: PathBuf,
    /// `root` with every link resolved.
    real_root: PathBuf,
    /// Canonical paths of the folders outside `root` read so far, through links.
    outside: HashSet<PathBuf>,
    /// Links to folders not followed, relative to `root`.
    skipped: Vec<PathBuf>,
    /// Which files the walk lists.
    claims: fn(&Path) -> bool,
}

impl Walk {
    fn new(root: &Path, claims: fn(&Path) -> bool) -> Result<Walk> {
        let real_root =
            std::fs::canonicalize(root).map_err(|e| data_err(root, format!("cannot read: {e}")))?;
        Ok(Walk {
            root: root.to_path_buf(),
            real_root,
            outside: HashSet::new(),
            skipped: Vec::new(),
            claims,
        })
    }

    /// Sorted sub-folder names and sorted files of the kind directly in `root`. One level needs no
    /// walk, and reading the class folders' listings here would read them twice.
    fn list(&mut self) -> Result<(Vec<String>, Vec<PathBuf>)> {
        let dir = self.root.clone();
        let cannot = |e: std::io::Error| data_err(&dir, format!("cannot list: {e}"));
        let mut entries = std::fs::read_dir(&dir)
            .map_err(cannot)?
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(cannot)?;
        // Sorted first, so which of two links to one folder is followed does not vary.
        entries.sort_by_key(|e| e.file_name());
        let mut dirs = Vec::new();
        let mut files = Vec::new();
        for entry in entries {
            let path = entry.path();
            if is_hidden(&path) {
                continue;
            }
            let name = PathBuf::from(entry.file_name());
            if path.is_dir() {
                let link = entry.file_type().map_err(cannot)?.is_symlink();
                if self.enter(&path, link)? {
                    dirs.push(name.to_string_lossy().into_owned());
                } else {
                    self.skipped.push(name);
                }
            } else if (self.claims)(&path) {
                // Broken links included: the header check says what is wrong with them.
                files.push(name);
            }
        }
        Ok((dirs, files))
    }

    /// Files of the kind anywhere below `root/dir`, relative to `root`: a folder's own files
    /// in name order, then its sub-folders' in name order.
    fn files(&mut self, dir: &str) -> Result<Vec<PathBuf>> {
        let root = self.root.clone();
        let relative = |path: &Path| path.strip_prefix(&root).unwrap_or(path).to_path_buf();
        let mut files = Vec::new();
        // walkdir follows links and reports a link to a folder the walk is inside (a loop)
        // as an error; `enter` catches the rest (folders read elsewhere, or already).
        let mut it = WalkDir::new(root.join(dir))
            .follow_links(true)
            .sort_by_file_name()
            .into_iter();
        while let Some(next) = it.next() {
            let entry = match next {
                Ok(entry) => entry,
                Err(e) => {
                    let Some(path) = e.path().map(Path::to_path_buf) else {
                        return Err(data_err(&root.join(dir), format!("cannot list: {e}")));
                    };
                    if is_hidden(&path) {
                        // Ignored, like any hidden entry.
                    } else if e.loop_ancestor().is_some() {
                        self.skipped.push(relative(&path));
                    } else if path.is_symlink() && !path.exists() {
                        // A broken link: as a file of the kind it stays, for the header
                        // check to report; anything else is ignored.
                        if (self.claims)(&path) {
                            files.push(relative(&path));
                        }
                    } else {
                        let why = e.io_error().map_or(e.to_string(), |io| io.to_string());
                        return Err(data_err(&path, format!("cannot list: {why}")));
                    }
                    continue;
                }
            };
            if entry.depth() == 0 {
                continue;
            }
            let path = entry.path();
            let is_dir = entry.file_type().is_dir();
            if is_hidden(path) {
                if is_dir {
                    it.skip_current_dir();
                }
            } else if is_dir {
                if !self.enter(path, entry.path_is_symlink())? {
                    self.skipped.push(relative(path));
                    it.skip_current_dir();
                }
            } else if (self.claims)(path) {
                files.push(relative(path));
            }
        }
        files.sort_by(|a, b| listing_order(a, b));
        Ok(files)
    }

    /// Whether to read the folder `path`, reached through a link if `link`: each real folder
    /// is read once, and a folder inside `root` only where it is.
    fn enter(&mut self, path: &Path, link: bool) -> Result<bool> {
        let real =
            std::fs::canonicalize(path).map_err(|e| data_err(path, format!("cannot read: {e}")))?;
        if let Ok(inside) = real.strip_prefix(&self.real_root) {
            // Read where it is, unless hidden there (then only the link reaches it).
            if !inside.iter().any(|c| c.to_string_lossy().starts_with('.')) {
                return Ok(!link);
            }
        } else if self.real_root.starts_with(&real) {
            // It holds `root`: reading it would read everything again.
            return Ok(false);
        }
        Ok(self.outside.insert(real))
    }
}

/// The order a folder-by-folder listing gives: a folder's own files by name, then each of
/// its sub-folders' in name order.
fn listing_order(a: &Path, b: &Path) -> Ordering {
    let (a, b): (Vec<_>, Vec<_>) = (a.iter().collect(), b.iter().collect());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if x != y {
            let (x_file, y_file) = (i + 1 == a.len(), i + 1 == b.len());
            return y_file.cmp(&x_file).then(x.cmp(y));
        }
    }
    a.len().cmp(&b.len())
}
