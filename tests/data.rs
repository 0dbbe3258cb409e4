//! Data sets, augmentation and the loader, on fixtures each test writes into its own temp dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cpc::data::augment::{self, normalise, Augment};
use cpc::data::{
    self, builtin, cifar, stl, Batch, Builtin, BuiltinConfig, Dataset, Format, Loader,
    LoaderConfig, LoaderState, OnBadImage, OpenOptions, Sequential, Split,
};
use cpc::Error;
use rand::SeedableRng;

mod common;
use common::{expect_err, TestDir};

/// A w x h image whose pixel (x, y) is (10x, 10y, 7(x+y)) + `tint`, saved by extension.
fn write_image(path: &Path, w: u32, h: u32, tint: u8) {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (10 * x) as u8 + tint,
            (10 * y) as u8 + tint,
            (7 * (x + y)) as u8 + tint,
        ])
    })
    .save(path)
    .unwrap();
}

fn opts() -> OpenOptions {
    OpenOptions::default()
}

fn skip() -> OpenOptions {
    OpenOptions {
        on_bad_image: OnBadImage::Skip,
        ..OpenOptions::default()
    }
}

fn open(path: &Path, options: &OpenOptions) -> cpc::Result<Box<dyn Dataset>> {
    data::open(Some(path), Format::Auto, options)
}

// ---------------------------------------------------------------- image folder

#[test]
fn folder_with_class_folders_labels_by_sorted_names() {
    let dir = TestDir::new("classes");
    write_image(&dir.path("dog/c.png"), 6, 5, 0);
    write_image(&dir.path("cat/b.jpg"), 8, 8, 0);
    write_image(&dir.path("cat/a.png"), 4, 3, 20);
    write_image(&dir.path("cat/deeper/d.png"), 5, 5, 0);
    std::fs::write(dir.path("dog/notes.txt"), "not an image").unwrap();
    std::fs::write(dir.path("cat/.hidden.png"), "macOS resource fork").unwrap();

    let ds = open(&dir, &opts()).unwrap();
    assert_eq!(ds.len(), 4);
    assert_eq!(ds.num_classes(), Some(2));
    let names: Vec<_> = (0..4).map(|i| ds.name(i)).collect();
    assert_eq!(
        names,
        ["cat/a.png", "cat/b.jpg", "cat/deeper/d.png", "dog/c.png"]
    );
    let labels: Vec<_> = (0..4).map(|i| ds.label(i)).collect();
    assert_eq!(labels, [Some(0), Some(0), Some(0), Some(1)]);
    assert_eq!(ds.class_name(1).as_deref(), Some("dog"));

    // PNG is lossless: pixel (x=3, y=2) of a.png is (30, 20, 35) + 20, in the planar layout.
    let a = ds.image(0).unwrap();
    assert_eq!((a.width, a.height, a.data.len()), (4, 3, 36));
    assert_eq!(a.at(0, 2, 3), 50.0 / 255.0);
    assert_eq!(a.at(1, 2, 3), 40.0 / 255.0);
    assert_eq!(a.at(2, 2, 3), 55.0 / 255.0);
    // JPEG decodes close to what was written.
    let b = ds.image(1).unwrap();
    assert_eq!((b.width, b.height), (8, 8));
    assert!((b.at(0, 4, 6) - 60.0 / 255.0).abs() < 0.1);
}

#[test]
fn flat_folder_is_unlabelled() {
    let dir = TestDir::new("flat");
    for name in ["b.png", "a.png", "c.bmp"] {
        write_image(&dir.path(name), 4, 4, 0);
    }
    let ds = data::open(Some(&dir), Format::Folder, &opts()).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.num_classes(), None);
    assert_eq!(ds.label(0), None);
    assert_eq!(ds.name(0), "a.png");
    assert_eq!(ds.name(2), "c.bmp");
}

#[test]
fn folder_split_into_train_and_test() {
    let dir = TestDir::new("split");
    write_image(&dir.path("train/x/1.png"), 4, 4, 0);
    write_image(&dir.path("train/y/2.png"), 4, 4, 0);
    write_image(&dir.path("val/x/3.png"), 4, 4, 0);
    let train = open(&dir, &opts()).unwrap();
    assert_eq!((train.len(), train.num_classes()), (2, Some(2)));
    let test = open(
        &dir,
        &OpenOptions {
            split: Split::Test,
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(test.name(0), "x/3.png");
}

#[test]
fn corrupt_image_stops_naming_it_or_is_skipped_and_counted() {
    let dir = TestDir::new("corrupt");
    write_image(&dir.path("a/good.png"), 4, 4, 0);
    std::fs::write(dir.path("a/broken.png"), b"this is not a PNG at all").unwrap();

    let e = expect_err(open(&dir, &opts()), "broken.png");
    assert!(matches!(e, Error::BadImage { .. }), "{e:?}");

    let ds = open(&dir, &skip()).unwrap();
    assert_eq!(ds.len(), 1);
    assert_eq!(ds.skipped(), 1);
    assert_eq!(ds.name(0), "a/good.png");
}

/// A PNG cut short: its header reads (so open passes it) but decoding fails.
fn write_truncated_png(path: &Path) {
    let full = path.with_extension("full.png");
    write_image(&full, 16, 16, 0);
    let bytes = std::fs::read(&full).unwrap();
    std::fs::remove_file(&full).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

#[test]
fn image_failing_only_while_decoding_stops_or_is_skipped() {
    let dir = TestDir::new("truncated");
    for k in 0..4 {
        write_image(&dir.path(&format!("{k}.png")), 8, 8, k as u8);
    }
    write_truncated_png(&dir.path("2b.png")); // index 3 in sorted order

    let ds = open(&dir, &opts()).unwrap();
    assert_eq!(ds.len(), 5);
    let results: Vec<_> = Sequential::new(&*ds, 8, 2).collect();
    let e = results
        .into_iter()
        .find_map(|r| r.err())
        .expect("the truncated file errors");
    assert!(e.to_string().contains("2b.png"), "{e}");

    // Skip: Sequential leaves it out; the loader puts the next image of the order in its place.
    let ds: Arc<dyn Dataset> = open(&dir, &skip()).unwrap().into();
    let seen: Vec<usize> = Sequential::new(&*ds, 8, 2)
        .flat_map(|b| b.unwrap().indices)
        .collect();
    assert_eq!(seen, [0, 1, 2, 4]);
    assert_eq!(ds.skipped(), 1);
    let mut config = LoaderConfig::new(5, 8, 1);
    config.shuffle = false;
    let mut loader = Loader::new(ds.clone(), config, LoaderState::default()).unwrap();
    for _ in 0..3 {
        assert_eq!(loader.next_batch().unwrap().indices, [0, 1, 2, 4, 4]);
    }
    assert_eq!(ds.skipped(), 1);
}

#[test]
fn empty_and_missing_folders_are_errors_naming_them() {
    let dir = TestDir::new("empty");
    let empty = dir.path("nothing/x");
    std::fs::create_dir_all(&empty).unwrap();
    let e = expect_err(
        data::open(Some(&empty), Format::Folder, &opts()),
        "nothing/x",
    );
    assert!(e.to_string().contains("no images"), "{e}");

    let only_text = dir.path("text/readme.txt");
    std::fs::write(&only_text, "hello").unwrap();
    expect_err(open(only_text.parent().unwrap(), &opts()), "no images");

    let classes_empty = dir.path("classes/a/.keep");
    std::fs::write(&classes_empty, "").unwrap();
    expect_err(open(&dir.join("classes"), &opts()), "class folders");

    let missing = dir.join("not-there");
    let e = expect_err(open(&missing, &opts()), "not-there");
    assert!(e.to_string().contains("no such"), "{e}");
}

#[test]
fn image_below_minimum_side_names_file_and_sizes() {
    let dir = TestDir::new("small");
    write_image(&dir.path("big.png"), 12, 10, 0);
    write_image(&dir.path("tiny.png"), 6, 4, 0);
    let min8 = OpenOptions {
        min_side: 8,
        ..opts()
    };
    let e = expect_err(open(&dir, &min8), "tiny.png");
    let text = e.to_string();
    assert!(text.contains("6x4") && text.contains('8'), "{text}");

    let ds = open(
        &dir,
        &OpenOptions {
            min_side: 8,
            ..skip()
        },
    )
    .unwrap();
    assert_eq!((ds.len(), ds.skipped()), (1, 1));
    assert_eq!(ds.name(0), "big.png");
}

/// `open` on another thread, failing the test (not hanging it) after 20 s.
fn open_in_time(path: &Path, options: &OpenOptions) -> cpc::Result<Box<dyn Dataset>> {
    let (send, recv) = std::sync::mpsc::channel();
    let (path, options) = (path.to_path_buf(), options.clone());
    std::thread::spawn(move || send.send(open(&path, &options)));
    recv.recv_timeout(std::time::Duration::from_secs(20))
        .expect("open did not finish within 20 s")
}

#[cfg(unix)]
#[test]
fn folder_symlink_loops_end_and_each_folder_is_read_once() {
    use std::os::unix::fs::symlink;
    let dir = TestDir::new("link-loops");
    for k in 0..3 {
        write_image(&dir.path(&format!("cat/{k}.png")), 4, 4, k as u8);
    }
    write_image(&dir.path("dog/0.png"), 4, 4, 0);
    // Two links to `.` used to branch the walk until the path got too long (hours); one to
    // `..` re-read every class under dog/; a class folder linked to `.` held everything.
    symlink(".", dir.path("cat/self1")).unwrap();
    symlink(".", dir.path("cat/self2")).unwrap();
    symlink("..", dir.path("dog/up")).unwrap();
    symlink(".", dir.path("all")).unwrap();
    // A link to a class folder from inside another: that folder is read where it is.
    symlink("../cat", dir.path("dog/cats")).unwrap();

    let ds = open_in_time(&dir, &opts()).unwrap();
    let names: Vec<_> = (0..ds.len()).map(|i| ds.name(i)).collect();
    assert_eq!(names, ["cat/0.png", "cat/1.png", "cat/2.png", "dog/0.png"]);
    assert_eq!(ds.num_classes(), Some(2));
    assert_eq!(ds.class_name(1).as_deref(), Some("dog"));
    assert!(
        ds.describe().contains("5 folder links skipped"),
        "{}",
        ds.describe()
    );
    let folder = data::ImageFolder::open(&dir, &opts()).unwrap();
    let mut links: Vec<_> = folder.skipped_links().to_vec();
    links.sort();
    let expected: Vec<PathBuf> = ["all", "cat/self1", "cat/self2", "dog/cats", "dog/up"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(links, expected);
}

#[cfg(unix)]
#[test]
fn folder_symlinks_to_files_and_outside_folders_are_followed_once() {
    use std::os::unix::fs::symlink;
    let dir = TestDir::new("link-outside");
    write_image(&dir.path("ext/e.png"), 4, 4, 1);
    write_image(&dir.path("ext/inner/f.png"), 4, 4, 2);
    write_image(&dir.path("lone.png"), 4, 4, 3);
    symlink("..", dir.path("ext/inner/back")).unwrap(); // a loop inside the outside folder
    write_image(&dir.path("data/cat/0.png"), 4, 4, 0);
    write_image(&dir.path("data/dog/0.png"), 4, 4, 0);
    let ext = dir.join("ext");
    symlink(&ext, dir.path("data/cat/ext")).unwrap();
    symlink(&ext, dir.path("data/dog/ext-again")).unwrap();
    symlink(ext.join("inner"), dir.path("data/dog/inner-again")).unwrap();
    symlink(dir.join("lone.png"), dir.path("data/cat/one.png")).unwrap();

    let ds = open_in_time(&dir.join("data"), &opts()).unwrap();
    let names: Vec<_> = (0..ds.len()).map(|i| ds.name(i)).collect();
    assert_eq!(
        names,
        [
            "cat/0.png",
            "cat/one.png",
            "cat/ext/e.png",
            "cat/ext/inner/f.png",
            "dog/0.png"
        ]
    );
    assert_eq!(
        ds.image(1).unwrap(),
        data::folder::decode(&dir.join("lone.png")).unwrap()
    );
    assert!(
        ds.describe().contains("3 folder links skipped"),
        "{}",
        ds.describe()
    );
}

/// A `w` x `h` JPEG of noise (so the entropy-coded data is most of the file), cut to half.
fn write_half_jpeg(path: &Path, w: u32, h: u32) {
    let mut state = 1u32;
    let full = image::RgbImage::from_fn(w, h, |_, _| {
        state = state.wrapping_mul(1664525).wrapping_add(1013904223);
        let b = state.to_le_bytes();
        image::Rgb([b[1], b[2], b[3]])
    });
    let mut bytes = Vec::new();
    full.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

#[test]
fn truncated_jpeg_stops_naming_it_or_is_skipped() {
    let dir = TestDir::new("half-jpeg");
    write_image(&dir.path("a.jpg"), 32, 32, 0);
    write_half_jpeg(&dir.path("b.jpg"), 64, 64);
    write_image(&dir.path("c.jpg"), 32, 32, 9);

    // Caught at open, where the JPEG decoder reads each JPEG whole.
    let e = expect_err(open(&dir, &opts()), "b.jpg");
    assert!(matches!(e, Error::BadImage { .. }), "{e:?}");
    assert!(e.to_string().contains("cut short"), "{e}");
    let ds = open(&dir, &skip()).unwrap();
    assert_eq!((ds.len(), ds.skipped()), (2, 1));
    assert_eq!(ds.name(1), "c.jpg");

    // And while decoding: c.jpg cut short after open stops naming it, or is skipped.
    write_half_jpeg(&dir.path("c.jpg"), 64, 64);
    let e = expect_err(ds.image(1), "c.jpg");
    assert!(e.to_string().contains("cut short"), "{e}");
    let seen: Vec<usize> = Sequential::new(&*ds, 8, 2)
        .flat_map(|b| b.unwrap().indices)
        .collect();
    assert_eq!(seen, [0]);
    assert_eq!(ds.skipped(), 2);
    expect_err(data::folder::decode(&dir.join("b.jpg")), "b.jpg");
}

#[test]
fn every_folder_format_cut_short_is_a_bad_image() {
    let dir = TestDir::new("half-any");
    for ext in ["png", "jpg", "bmp", "ppm", "tga"] {
        let full = dir.path(&format!("full.{ext}"));
        write_image(&full, 48, 48, 0);
        let bytes = std::fs::read(&full).unwrap();
        let half = dir.path(&format!("half.{ext}"));
        std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
        data::folder::decode(&full).unwrap();
        expect_err(data::folder::decode(&half), &format!("half.{ext}"));
    }
}

/// CRC-32 (ISO 3309, as PNG uses), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A small real PNG whose IHDR is patched to declare `w` x `h` (with its CRC recomputed).
fn write_png_declaring(path: &Path, w: u32, h: u32) {
    write_image(path, 4, 4, 0);
    let mut bytes = std::fs::read(path).unwrap();
    // Signature (8), IHDR length (4), "IHDR" (4), width (4), height (4), 5 more, CRC (4).
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn image_declaring_too_many_pixels_fails_at_open_naming_it() {
    let dir = TestDir::new("huge");
    write_image(&dir.path("a/fine.png"), 4, 4, 0);
    write_png_declaring(&dir.path("a/huge.png"), 100_000, 100_000);

    let e = expect_err(open(&dir, &opts()), "huge.png");
    assert!(matches!(e, Error::BadImage { .. }), "{e:?}");
    let text = e.to_string();
    let limit = data::folder::MAX_PIXELS.to_string();
    assert!(
        text.contains("declares 100000 x 100000 = 10000000000 pixels, over the limit of")
            && text.contains(&limit),
        "{text}"
    );
    // The decoder checks it too (a file may change after open).
    let e = expect_err(data::folder::decode(&dir.join("a/huge.png")), "huge.png");
    assert!(e.to_string().contains(&limit), "{e}");

    let ds = open(&dir, &skip()).unwrap();
    assert_eq!((ds.len(), ds.skipped()), (1, 1));
    assert_eq!(ds.name(0), "a/fine.png");
}

// ---------------------------------------------------------------- CIFAR-10

/// CIFAR byte of record `r`, channel c, row y, column x.
fn cifar_byte(r: usize, c: usize, y: usize, x: usize) -> u8 {
    (r * 31 + c * 70 + y * 5 + x * 3) as u8
}

fn write_cifar(path: &Path, records: usize, first_label: usize) {
    let mut bytes = Vec::new();
    for r in 0..records {
        bytes.push(((first_label + r) % 10) as u8);
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    bytes.push(cifar_byte(r, c, y, x));
                }
            }
        }
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn cifar_pixels_and_labels_land_where_the_format_says() {
    let dir = TestDir::new("cifar");
    let folder = dir
        .path("cifar-10-batches-bin/x")
        .parent()
        .unwrap()
        .to_path_buf();
    write_cifar(&folder.join("data_batch_1.bin"), 3, 7);
    write_cifar(&folder.join("data_batch_2.bin"), 2, 0);
    write_cifar(&folder.join("test_batch.bin"), 4, 5);

    // Auto finds the batches inside cifar-10-batches-bin/.
    assert_eq!(data::detect(&dir).unwrap(), Format::Cifar10);
    let train = open(&dir, &opts()).unwrap();
    assert_eq!(train.len(), 5);
    assert_eq!(train.num_classes(), Some(10));
    let labels: Vec<_> = (0..5).map(|i| train.label(i).unwrap()).collect();
    assert_eq!(labels, [7, 8, 9, 0, 1]);
    assert_eq!(train.name(4), "cifar:data_batch_2.bin#1");
    let im = train.image(1).unwrap();
    assert_eq!((im.width, im.height), (32, 32));
    for (c, y, x) in [(0, 0, 0), (1, 5, 17), (2, 31, 30)] {
        assert_eq!(
            im.at(c, y, x),
            cifar_byte(1, c, y, x) as f32 / 255.0,
            "c={c} y={y} x={x}"
        );
    }

    let test = open(
        &folder,
        &OpenOptions {
            split: Split::Test,
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(test.len(), 4);
    assert_eq!(test.name(3), "cifar:test_batch.bin#3");
    assert_eq!(test.label(3), Some(8));

    // One file stands for itself.
    let one = open(&folder.join("data_batch_2.bin"), &opts()).unwrap();
    assert_eq!(one.len(), 2);
    assert_eq!(one.image(1).unwrap(), train.image(4).unwrap());
}

#[test]
fn cifar_file_of_wrong_size_names_file_size_and_record() {
    let dir = TestDir::new("cifar-bad");
    let path = dir.path("data_batch_1.bin");
    std::fs::write(&path, vec![0u8; cifar::RECORD * 2 + 5]).unwrap();
    let e = expect_err(open(&dir, &opts()), "data_batch_1.bin");
    let text = e.to_string();
    assert!(text.contains("6151") && text.contains("3073"), "{text}");
    expect_err(
        open(
            &dir,
            &OpenOptions {
                split: Split::Test,
                ..opts()
            },
        ),
        "test_batch.bin",
    );
}

// ---------------------------------------------------------------- STL-10

#[test]
fn stl_pixels_are_column_major_and_labels_shift_to_zero() {
    let dir = TestDir::new("stl");
    let folder = dir.path("stl10_binary/x").parent().unwrap().to_path_buf();
    // Two images, all zero but image 1, channel 1, column x=5, row y=70, which is 200.
    let mut x_bytes = vec![0u8; 2 * stl::IMAGE_BYTES];
    x_bytes[stl::IMAGE_BYTES + 96 * 96 + 5 * 96 + 70] = 200;
    std::fs::write(folder.join("train_X.bin"), &x_bytes).unwrap();
    std::fs::write(folder.join("train_y.bin"), [3u8, 10]).unwrap();
    std::fs::write(folder.join("unlabeled_X.bin"), vec![9u8; stl::IMAGE_BYTES]).unwrap();

    assert_eq!(data::detect(&dir).unwrap(), Format::Stl10);
    let train = open(&dir, &opts()).unwrap();
    assert_eq!(train.len(), 2);
    assert_eq!((train.label(0), train.label(1)), (Some(2), Some(9)));
    assert_eq!(train.name(1), "stl:train_X.bin#1");
    let im = train.image(1).unwrap();
    assert_eq!((im.width, im.height), (96, 96));
    assert_eq!(im.at(1, 70, 5), 200.0 / 255.0);
    assert_eq!(im.at(1, 5, 70), 0.0);
    assert_eq!(im.data.iter().filter(|&&v| v != 0.0).count(), 1);

    let unlabeled = open(
        &folder,
        &OpenOptions {
            split: Split::Unlabeled,
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(
        (unlabeled.len(), unlabeled.label(0), unlabeled.num_classes()),
        (1, None, None)
    );
    expect_err(
        open(
            &folder,
            &OpenOptions {
                split: Split::Test,
                ..opts()
            },
        ),
        "test_X.bin",
    );
}

#[test]
fn stl_files_of_wrong_size_name_file_size_and_expected() {
    let dir = TestDir::new("stl-bad");
    std::fs::write(dir.path("train_X.bin"), vec![0u8; stl::IMAGE_BYTES + 1]).unwrap();
    std::fs::write(dir.path("train_y.bin"), [1u8]).unwrap();
    let e = expect_err(open(&dir, &opts()), "train_X.bin");
    assert!(
        e.to_string().contains("27649") && e.to_string().contains("27648"),
        "{e}"
    );

    std::fs::write(dir.path("train_X.bin"), vec![0u8; 2 * stl::IMAGE_BYTES]).unwrap();
    let e = expect_err(open(&dir, &opts()), "train_y.bin");
    assert!(
        e.to_string().contains("1 bytes") && e.to_string().contains('2'),
        "{e}"
    );

    std::fs::write(dir.path("train_y.bin"), [1u8, 11]).unwrap();
    expect_err(open(&dir, &opts()), "1..10");
}

#[test]
fn binaries_cut_short_are_errors_naming_the_file() {
    // Cut mid-record: the size is no multiple of the record, for either format.
    let dir = TestDir::new("binaries-cut");
    let cifar_path = dir.path("cifar/data_batch_1.bin");
    write_cifar(&cifar_path, 3, 0);
    let bytes = std::fs::read(&cifar_path).unwrap();
    std::fs::write(&cifar_path, &bytes[..bytes.len() / 2]).unwrap();
    expect_err(open(&dir.join("cifar"), &opts()), "data_batch_1.bin");

    // STL-10 reads images on demand: a file cut short after open is an error naming it
    // when the missing image is read, not a panic or a zero image.
    let x = dir.path("stl/train_X.bin");
    std::fs::write(&x, vec![7u8; 3 * stl::IMAGE_BYTES]).unwrap();
    std::fs::write(dir.path("stl/train_y.bin"), [1u8, 2, 3]).unwrap();
    let ds = open(&dir.join("stl"), &opts()).unwrap();
    std::fs::write(&x, vec![7u8; stl::IMAGE_BYTES + 5]).unwrap();
    ds.image(0).unwrap();
    expect_err(ds.image(2), "train_X.bin");
    // At a record boundary the labels' count gives the cut away.
    std::fs::write(&x, vec![7u8; 2 * stl::IMAGE_BYTES]).unwrap();
    expect_err(open(&dir.join("stl"), &opts()), "train_y.bin");
}

// ---------------------------------------------------------------- built-in stripes

fn stripes(seed: u64, split: Split, side: usize) -> Builtin {
    let config = BuiltinConfig {
        seed,
        train_len: 200,
        test_len: 50,
        side,
    };
    Builtin::new(config, split).unwrap()
}

#[test]
fn builtin_is_deterministic_per_seed_and_every_image_differs() {
    let a = stripes(1, Split::Train, 32);
    let b = stripes(1, Split::Train, 32);
    let c = stripes(2, Split::Train, 32);
    let t = stripes(1, Split::Test, 32);
    for i in [0, 7, 199] {
        assert_eq!(a.image(i).unwrap(), b.image(i).unwrap());
        assert_ne!(a.image(i).unwrap(), c.image(i).unwrap());
    }
    assert_ne!(a.image(3).unwrap(), t.image(3).unwrap());
    let images: Vec<_> = (0..40).map(|i| a.image(i).unwrap()).collect();
    for i in 0..images.len() {
        assert!(images[i].data.iter().all(|v| (0.0..=1.0).contains(v)));
        for j in 0..i {
            assert_ne!(images[i], images[j], "images {i} and {j} are identical");
        }
    }
    let big = stripes(0, Split::Train, 300).image(0).unwrap();
    assert_eq!((big.width, big.height), (300, 300));
    // No data means the built-in set.
    let default = data::open(None, Format::Auto, &opts()).unwrap();
    assert_eq!(default.len(), BuiltinConfig::default().train_len);
}

#[test]
fn builtin_has_ten_balanced_classes_not_told_by_mean_colour() {
    let ds = stripes(3, Split::Train, 32);
    assert_eq!(ds.num_classes(), Some(10));
    let mut counts = [0usize; 10];
    let mut mean_colour = [[0.0f64; 3]; 10];
    for i in 0..ds.len() {
        let class = ds.label(i).unwrap() as usize;
        counts[class] += 1;
        let im = ds.image(i).unwrap();
        for (c, plane) in im.data.chunks(32 * 32).enumerate() {
            mean_colour[class][c] +=
                plane.iter().map(|&v| v as f64).sum::<f64>() / plane.len() as f64;
        }
    }
    assert_eq!(counts, [20; 10]);
    // Band colours are uniform whatever the class: every class's mean colour is near 0.5.
    for (class, m) in mean_colour.iter().enumerate() {
        for v in m {
            let v = v / counts[class] as f64;
            assert!((v - 0.5).abs() < 0.12, "class {class} mean colour {v}");
        }
    }
    assert_eq!(ds.class_name(7).as_deref(), Some("45deg-narrow"));
}

#[test]
fn builtin_orientation_shows_in_the_pixels() {
    // Class 0 (vertical bands): every row repeats the same bands, so row means hardly vary
    // while column means do; class 4 (horizontal bands) the reverse.
    let ds = stripes(5, Split::Train, 64);
    let spread = |im: &data::Image, by_rows: bool| -> f32 {
        let means: Vec<f32> = (0..64)
            .map(|k| {
                (0..64)
                    .map(|j| {
                        if by_rows {
                            im.at(0, k, j)
                        } else {
                            im.at(0, j, k)
                        }
                    })
                    .sum::<f32>()
                    / 64.0
            })
            .collect();
        let m = means.iter().sum::<f32>() / 64.0;
        means.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / 64.0
    };
    for i in [0, 10, 20] {
        let vertical = ds.image(i).unwrap();
        let horizontal = ds.image(i + 4).unwrap();
        let (rv, cv) = (spread(&vertical, true), spread(&vertical, false));
        let (rh, ch) = (spread(&horizontal, true), spread(&horizontal, false));
        assert!(
            cv > 4.0 * rv,
            "vertical bands {i}: column spread {cv}, row spread {rv}"
        );
        assert!(
            rh > 4.0 * ch,
            "horizontal bands {}: row spread {rh}, column spread {ch}",
            i + 4
        );
    }
}

// ---------------------------------------------------------------- augmentation

/// A w x h image with distinct values everywhere: v = (c*h*w + y*w + x) / (3hw).
fn crafted(w: usize, h: usize) -> data::Image {
    let n = 3 * w * h;
    data::Image::new(w, h, (0..n).map(|k| k as f32 / n as f32).collect())
}

#[test]
fn augment_shapes_and_resize() {
    let aug = Augment::new(16);
    assert_eq!(aug.resized_size(64, 64), (19, 19)); // round(16 * 300/256) = 19
    assert_eq!(aug.resized_size(100, 40), (48, 19));
    assert_eq!(aug.resized_size(8, 8), (19, 19));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for (w, h) in [(50, 30), (30, 50), (8, 8), (300, 300)] {
        let mut out = vec![f32::NAN; aug.out_len()];
        aug.random(&crafted(w, h), &mut rng, &mut out);
        assert!(out.iter().all(|v| (-1.0..=1.0).contains(v)), "{w}x{h}");
    }
    // A constant image stays constant through any resize.
    let flat = data::Image::new(40, 23, vec![0.25; 3 * 40 * 23]);
    let mut out = vec![f32::NAN; aug.out_len()];
    aug.random(&flat, &mut rng, &mut out);
    assert!(out.iter().all(|&v| (v - normalise(0.25)).abs() < 1e-6));
}

#[test]
fn augment_flip_mirrors_and_identity_otherwise() {
    // Ratio 1 on an S x S image: the resize is the identity and the crop the whole image.
    let s = 12;
    let im = crafted(s, s);
    let mut aug = Augment {
        short_side_ratio: 1.0,
        flip_p: 0.0,
        grey_p: 0.0,
        ..Augment::new(s)
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut plain = vec![0.0; aug.out_len()];
    aug.random(&im, &mut rng, &mut plain);
    aug.flip_p = 1.0;
    let mut flipped = vec![0.0; aug.out_len()];
    aug.random(&im, &mut rng, &mut flipped);
    for c in 0..3 {
        for y in 0..s {
            for x in 0..s {
                let k = (c * s + y) * s + x;
                assert_eq!(plain[k], normalise(im.at(c, y, x)));
                assert_eq!(flipped[k], normalise(im.at(c, y, s - 1 - x)));
            }
        }
    }
    // Grey: all three channels equal the luma.
    aug.flip_p = 0.0;
    aug.grey_p = 1.0;
    let mut grey = vec![0.0; aug.out_len()];
    aug.random(&im, &mut rng, &mut grey);
    let luma = augment::LUMA[0] * im.at(0, 3, 4)
        + augment::LUMA[1] * im.at(1, 3, 4)
        + augment::LUMA[2] * im.at(2, 3, 4);
    for c in 0..3 {
        assert!((grey[(c * s + 3) * s + 4] - normalise(luma)).abs() < 1e-6);
    }
}

#[test]
fn augment_random_crops_vary_and_centre_crop_is_fixed() {
    let aug = Augment::new(16);
    let im = stripes(0, Split::Train, 64).image(0).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut a = vec![0.0; aug.out_len()];
    let mut b = vec![0.0; aug.out_len()];
    aug.random(&im, &mut rng, &mut a);
    aug.random(&im, &mut rng, &mut b);
    assert_ne!(a, b);
    aug.centre(&im, &mut a);
    aug.centre(&im, &mut b);
    assert_eq!(a, b);
    // The centre crop of a same-size image with ratio 1 is the image itself.
    let c = crafted(16, 16);
    let one = Augment {
        short_side_ratio: 1.0,
        ..aug
    };
    one.centre(&c, &mut a);
    assert!(a.iter().zip(&c.data).all(|(&o, &v)| o == normalise(v)));
}

// ---------------------------------------------------------------- loader

fn small_set() -> Arc<dyn Dataset> {
    let config = BuiltinConfig {
        seed: 9,
        train_len: 40,
        test_len: 10,
        side: 24,
    };
    Arc::new(Builtin::new(config, Split::Train).unwrap())
}

fn take(loader: &mut Loader, n: usize) -> Vec<Batch> {
    (0..n).map(|_| loader.next_batch().unwrap()).collect()
}

#[test]
fn loader_batches_do_not_depend_on_worker_count() {
    let ds = small_set();
    let run = |workers: usize| {
        let config = LoaderConfig {
            workers,
            prefetch: 3,
            ..LoaderConfig::new(12, 16, 7)
        };
        take(
            &mut Loader::new(ds.clone(), config, LoaderState::default()).unwrap(),
            8,
        )
    };
    let one = run(1);
    let three = run(3);
    assert_eq!(one, three);

    // 40 images in batches of 12: 3 batches an epoch, each epoch a different shuffle.
    assert_eq!(one[0].images.len(), 12 * 3 * 16 * 16);
    let starts: Vec<_> = one
        .iter()
        .map(|b| (b.start.epoch, b.start.position))
        .collect();
    assert_eq!(
        starts,
        [
            (0, 0),
            (0, 12),
            (0, 24),
            (1, 0),
            (1, 12),
            (1, 24),
            (2, 0),
            (2, 12)
        ]
    );
    let epoch0: Vec<usize> = one[..3].iter().flat_map(|b| b.indices.clone()).collect();
    let epoch1: Vec<usize> = one[3..6].iter().flat_map(|b| b.indices.clone()).collect();
    let mut distinct = epoch0.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 36);
    assert_ne!(epoch0, epoch1);
    for b in &one {
        let expected: Vec<_> = b.indices.iter().map(|&i| ds.label(i)).collect();
        assert_eq!(b.labels, expected);
    }

    let other_seed = take(
        &mut Loader::new(
            ds.clone(),
            LoaderConfig::new(12, 16, 8),
            LoaderState::default(),
        )
        .unwrap(),
        1,
    );
    assert_ne!(other_seed[0].indices, one[0].indices);
}

#[test]
fn loader_resumed_from_its_state_gives_the_same_next_batches() {
    let ds = small_set();
    let config = LoaderConfig {
        workers: 3,
        ..LoaderConfig::new(12, 16, 11)
    };
    let mut full = Loader::new(ds.clone(), config.clone(), LoaderState::default()).unwrap();
    let all = take(&mut full, 9);

    let mut first = Loader::new(ds.clone(), config.clone(), LoaderState::default()).unwrap();
    take(&mut first, 4);
    let state = first.state();
    assert_eq!(
        state,
        LoaderState {
            epoch: 1,
            position: 12
        }
    );
    drop(first);

    let saved = state.to_bytes();
    let mut resumed = Loader::new(ds.clone(), config, LoaderState::from_bytes(saved)).unwrap();
    assert_eq!(take(&mut resumed, 5), all[4..]);
    assert_eq!(resumed.state(), full.state());
    assert_eq!(resumed.batches_per_epoch(), 3);
}

#[test]
fn loader_rejects_a_batch_larger_than_the_set() {
    let r = Loader::new(
        small_set(),
        LoaderConfig::new(41, 16, 0),
        LoaderState::default(),
    );
    expect_err(r, "41");
}

#[test]
fn sequential_visits_every_image_once_with_centre_crops() {
    let ds = small_set();
    let batches: Vec<_> = Sequential::new(&*ds, 16, 16)
        .workers(3)
        .map(|b| b.unwrap())
        .collect();
    let sizes: Vec<_> = batches.iter().map(|b| b.len()).collect();
    assert_eq!(sizes, [16, 16, 8]);
    let indices: Vec<_> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(indices, (0..40).collect::<Vec<_>>());
    let aug = Augment::new(16);
    let mut expected = vec![0.0; aug.out_len()];
    aug.centre(&ds.image(21).unwrap(), &mut expected);
    let k = 21 - 16;
    assert_eq!(
        batches[1].images[k * aug.out_len()..(k + 1) * aug.out_len()],
        expected[..]
    );
    assert_eq!(batches[1].labels_u32().unwrap()[k], builtin::class_of(21));
}

#[test]
fn names_parse_for_the_command_line() {
    assert_eq!("cifar10".parse::<Format>().unwrap(), Format::Cifar10);
    assert_eq!("STL".parse::<Format>().unwrap(), Format::Stl10);
    assert_eq!("val".parse::<Split>().unwrap(), Split::Test);
    assert_eq!("skip".parse::<OnBadImage>().unwrap(), OnBadImage::Skip);
    assert!("png".parse::<Format>().unwrap_err().contains("folder"));
    assert_eq!(Split::Unlabeled.to_string(), "unlabeled");
}
