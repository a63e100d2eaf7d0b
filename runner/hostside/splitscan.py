"""One split of a dataset: find its images, pair each with its label file, check both, and tally what
was found. Standard library only, Python >= 3.7 (see datacheck.py for the whole check)."""

import errno
import os

from . import fanout, imageheader, labelfile

# What ultralytics (and, a subset, YOLOv7) take for an image, by suffix.
IMAGE_SUFFIXES = frozenset(
    ["avif", "bmp", "dng", "heic", "jp2", "jpeg", "jpeg2000", "jpg", "mpo", "png", "pfm", "tif", "tiff", "webp"]
)
# Those whose header imageheader reads; the others are counted as unverified, not failed.
HEADER_SUFFIXES = frozenset(["bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp"])
FIRST_OFFENDERS = 5  # per kind and split: enough to find the pattern, few enough to read
READ_CHUNK = 1 << 16
CHUNK_IMAGES = 2000  # a worker's share at a time: large enough that sending it costs little
PARALLEL_FROM = 2 * CHUNK_IMAGES  # below this, starting workers costs more than it saves


class Locator(object):
    """Paths as the training sees them (the workdir, datasets linked into it) and where the files
    really are. On the host the two are the same; on the controller a linked dataset is elsewhere."""

    def __init__(self, workdir, relocations=()):
        self.workdir = os.path.normpath(workdir)
        self.relocations = [(os.path.normpath(view), os.path.normpath(real)) for view, real in relocations]

    def in_workdir(self, relative):
        return os.path.normpath(os.path.join(self.workdir, relative))

    def real(self, path):
        for view, real in self.relocations:
            if path == view or path.startswith(view + os.sep):
                return real + path[len(view) :]
        return path

    def shown(self, path):
        """A path for the report: as the workdir shows it, relative to the workdir when inside it."""
        for view, real in self.relocations:
            if path == real or path.startswith(real + os.sep):
                path = view + path[len(real) :]
                break
        if path.startswith(self.workdir + os.sep):
            return path[len(self.workdir) + 1 :]
        return path


class Tally(object):
    """Counts and problems of one split (or of the dataset as a whole); chunks checked apart merge."""

    def __init__(self, nc, locator):
        self.locator = locator
        self.images = self.labels = self.backgrounds = self.empty_labels = self.instances = self.unverified = 0
        self.per_class = [0] * max(nc, 0)
        self.problem_counts = {}
        self.first = {}

    def add(self, kind, path, line, detail):
        """A problem at path (a real path), line (1-based, or None for the whole file)."""
        if self._counted(kind):  # the path is put in its reported form only for the few kept
            self.first[kind].append({"file": self.locator.shown(path), "line": line, "detail": detail})

    def add_shown(self, kind, shown_path, line, detail):
        """A problem at a path already in its reported form (the data YAML's)."""
        if self._counted(kind):
            self.first[kind].append({"file": shown_path, "line": line, "detail": detail})

    def _counted(self, kind):
        """Count one more problem of kind; True while its first offenders are still being kept."""
        self.problem_counts[kind] = self.problem_counts.get(kind, 0) + 1
        return len(self.first.setdefault(kind, [])) < FIRST_OFFENDERS

    def merge(self, other):
        for name in ("images", "labels", "backgrounds", "empty_labels", "instances", "unverified"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.per_class = [mine + theirs for mine, theirs in zip(self.per_class, other.per_class)]
        for kind, count in other.problem_counts.items():
            self.problem_counts[kind] = self.problem_counts.get(kind, 0) + count
            offenders = self.first.setdefault(kind, [])
            offenders += other.first[kind][: FIRST_OFFENDERS - len(offenders)]

    def counts(self):
        return {
            "images": self.images,
            "labels": self.labels,
            "backgrounds": self.backgrounds,
            "empty_labels": self.empty_labels,
            "instances": self.instances,
            "instances_per_class": list(self.per_class),
            "images_unverified": self.unverified,
        }

    def problem_report(self, severity):
        """Problems by kind, errors first: severity, count, first offenders."""
        kinds = sorted(self.problem_counts, key=lambda kind: (severity(kind) != "error", kind))
        return {
            kind: {"severity": severity(kind), "count": self.problem_counts[kind], "first": self.first[kind]}
            for kind in kinds
        }


class Images(object):
    """A split's images, by folder: each folder with its label folder and its image names."""

    def __init__(self):
        self.groups = []  # (image folder, label folder, image names), in the trainers' order
        self.count = 0
        self.listed = {}  # image folder -> the names of all images in it, where it was listed

    def add_entry(self, found, locator, tally):
        """Add the images of one split entry (already resolved to a real path)."""
        if os.path.isdir(found):
            for folder, names in _walk_images(found):
                self.listed[folder] = names  # all its images: no need to list it again for orphans
                self._add(folder, names)
        elif found.endswith(".txt"):
            self._add_listed(found, locator, tally)
        elif _suffix(found) in IMAGE_SUFFIXES:
            self._add(os.path.dirname(found), [os.path.basename(found)])
        else:
            tally.add("split_unreadable", found, None, "neither a folder, a .txt list of images nor an image")

    def _add(self, folder, names):
        label_dir = os.path.dirname(label_path(os.path.join(folder, "x.jpg")))
        self.groups.append((folder, label_dir, names))
        self.count += len(names)

    def _add_listed(self, list_file, locator, tally):
        """A list of images, one a line: `./x` is relative to the list's folder, another relative
        name to the working directory (the workdir), as both trainers read it."""
        try:
            with open(list_file, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()
        except OSError as error:
            tally.add("split_unreadable", list_file, None, error.strerror or str(error))
            return
        parent = os.path.dirname(list_file)
        by_folder = {}
        for line in lines:
            entry = line.strip()
            if not entry or _suffix(entry) not in IMAGE_SUFFIXES:
                continue  # the trainers skip what is not an image, silently
            if entry.startswith("./"):
                path = os.path.join(parent, entry[2:])
            else:
                path = locator.real(os.path.normpath(os.path.join(locator.workdir, entry)))
            folder, name = os.path.split(path)
            by_folder.setdefault(folder, []).append(name)
        for folder, names in by_folder.items():
            self._add(folder, names)

    def orphan_labels(self, tally, label_dirs_seen, labels_read):
        """Label files whose image is not in its folder (each label folder counted once per check).
        labels_read: label folder -> label files read from it for this split's images."""
        for folder, label_dir, _ in self.groups:
            if label_dir in label_dirs_seen:
                continue
            label_dirs_seen.add(label_dir)
            listing = _list(label_dir)
            if len(listing) == labels_read.get(label_dir, 0):
                continue  # every file there is a label just read: no orphan, and no set to build
            images = self.listed.get(folder)
            if images is None:
                images = [name for name in _list(folder) if _suffix(name) in IMAGE_SUFFIXES]
            paired = set(name.rpartition(".")[0] + ".txt" for name in images)
            # A set difference, in C: a folder of 100,000 labels has none or a few without an image.
            for name in sorted(set(listing) - paired):
                if name.endswith(".txt") and not name.startswith("."):
                    tally.add("label_without_image", os.path.join(label_dir, name), None, "no image %s.*" % name[:-4])


def label_path(image):
    """ultralytics' img2label_paths: the last /images/ becomes /labels/, the suffix .txt."""
    images, labels = os.sep + "images" + os.sep, os.sep + "labels" + os.sep
    return labels.join(image.rsplit(images, 1)).rsplit(".", 1)[0] + ".txt"


def check_images(images, tally, kpt_shape, label_dirs_seen, workers):
    """Check every image of the split and its label, in chunks, spread over `workers` processes."""
    keypoint_numbers = kpt_shape[0] * kpt_shape[1] if kpt_shape else 0
    nc, locator = len(tally.per_class), tally.locator
    chunks = [
        (folder, label_dir, names[start : start + CHUNK_IMAGES], nc, keypoint_numbers, locator)
        for folder, label_dir, names in images.groups
        for start in range(0, len(names), CHUNK_IMAGES)
    ]
    labels_read = {}
    results = fanout.ordered_map(check_chunk, chunks, workers if images.count >= PARALLEL_FROM else 1)
    for chunk, chunk_tally in zip(chunks, results):
        tally.merge(chunk_tally)
        labels_read[chunk[1]] = labels_read.get(chunk[1], 0) + chunk_tally.labels
    images.orphan_labels(tally, label_dirs_seen, labels_read)


def check_chunk(chunk):
    """Check images of one folder and their labels: each image's header, each label's lines. It runs
    once per image, so paths are joined by hand (os.path.join is several calls) and counted in locals."""
    folder, label_dir, names, nc, keypoint_numbers, locator = chunk
    tally = Tally(nc, locator)
    clean = labelfile.CleanFiles(nc, tally.per_class, keypoint_numbers)
    folder, label_dir = folder + os.sep, label_dir + os.sep
    labels = backgrounds = empty = instances = 0
    for name in names:
        stem, _, suffix = name.rpartition(".")
        if not _image_readable(folder + name, suffix.lower(), tally):
            continue
        label = label_dir + stem + ".txt"
        try:
            data = _read(label)
        except OSError as error:
            if error.errno == errno.ENOENT:  # a background image, which the trainers allow
                backgrounds += 1
            else:
                tally.add("label_unreadable", label, None, error.strerror or str(error))
            continue
        labels += 1
        found = clean.instances(data)
        if found is None:
            found = _check_label_text(data, label, keypoint_numbers, tally)
            if found is None:
                empty += 1
                continue
        instances += found
    clean.finish()
    tally.images, tally.labels, tally.backgrounds = len(names), labels, backgrounds
    tally.empty_labels, tally.instances = empty, instances
    return tally


def _check_label_text(data, label, keypoint_numbers, tally):
    """Check a label file line by line, adding its problems to tally; its valid instances, or None
    for an empty one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        tally.add("label_unreadable", label, None, "not UTF-8 text (byte %d)" % error.start)
        return 0
    if not text.strip():
        return None
    found, problems = labelfile.check_text(text, len(tally.per_class), tally.per_class, keypoint_numbers)
    for kind, line, detail in problems:
        tally.add(kind, label, line, detail)
    return found


def _image_readable(image, suffix, tally):
    try:
        if suffix in HEADER_SUFFIXES:
            imageheader.read_header(image)
        elif os.path.exists(image):
            tally.unverified += 1
        else:
            raise OSError(errno.ENOENT, "No such file or directory")
    except imageheader.BadImage as error:
        tally.add("image_unreadable", image, None, str(error))
        return False
    except OSError as error:
        kind = "image_missing" if error.errno == errno.ENOENT else "image_unreadable"
        tally.add(kind, image, None, error.strerror or str(error))
        return False
    return True


def _read(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, READ_CHUNK)
        if len(data) < READ_CHUNK:
            return data  # nearly every label file: one read
        chunks = [data]
        while data:
            data = os.read(fd, READ_CHUNK)
            chunks.append(data)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _walk_images(root):
    """(folder, sorted image names) under root, as the trainers' recursive glob finds them: symlinked
    folders followed (each real folder once), hidden files and folders left out. A name that looks like
    an image (or a label) is taken for a file without a stat: os.walk would ask about each of 100,000."""
    seen, pending = set(), [root]
    while pending:
        folder = pending.pop()
        try:
            status = os.stat(folder)
            if (status.st_dev, status.st_ino) in seen:
                continue
            seen.add((status.st_dev, status.st_ino))
            names = os.listdir(folder)
        except OSError:
            continue
        found = [
            name
            for name in names
            if name.rpartition(".")[2].lower() in IMAGE_SUFFIXES and "." in name and name[0] != "."
        ]
        if len(found) < len(names):
            images = set(found)
            others = [
                os.path.join(folder, name)
                for name in names
                if name not in images and name[0] != "." and not name.endswith(".txt")
            ]
            pending += sorted((path for path in others if os.path.isdir(path)), reverse=True)  # popped in order
        if found:
            found.sort()
            yield folder, found


def _list(folder):
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _suffix(name):
    stem, dot, suffix = name.rpartition(".")
    return suffix.lower() if dot and stem else ""
