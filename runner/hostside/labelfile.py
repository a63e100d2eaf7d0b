"""One YOLO label file, checked line by line. Standard library only, Python >= 3.7.

A line is `class x_center y_center width height`, normalised to [0, 1]; or, for segmentation,
`class x1 y1 x2 y2 x3 y3 ...` (a polygon of at least 3 points); or, where the data YAML has
`kpt_shape: [K, D]`, a box followed by K keypoints of D numbers. This is the hot loop of a dataset
check (millions of lines): one match in C for the common file of valid 5-number boxes, and line by
line only for the others.
"""

import collections
import re

# Problem kinds a line can have; every one of them is an error (the trainer crashes on it or
# silently drops the image with all its boxes).
COLUMNS = "label_columns"
NOT_A_NUMBER = "label_not_a_number"
CLASS_NOT_INTEGER = "class_not_integer"
CLASS_OUT_OF_RANGE = "class_out_of_range"
COORDINATE_OUT_OF_RANGE = "coordinate_out_of_range"
BOX_NOT_POSITIVE = "box_not_positive"
DUPLICATE_LINE = "duplicate_line"  # an identical line again; a warning: the trainers drop the copy

POLYGON_MIN_NUMBERS = 7  # the class and 3 points


NO_PROBLEMS = ()
# A clean file's numbers as the regular expression reads them: plain decimals (no sign, exponent,
# "nan" or "inf"), so the range tests are in the text. Anything else goes line by line, to check_text.
UNIT = rb"(?:0(?:\.[0-9]*)?|\.[0-9]+|1(?:\.0*)?)"  # in [0, 1]
POSITIVE_UNIT = rb"(?:0?\.0*[1-9][0-9]*|1(?:\.0*)?)"  # in (0, 1]
GAP = rb"[ \t]+"
CLASS_TOKEN = re.compile(rb"\n([0-9]+)")  # after a newline: a literal prefix, which re finds fast


class CleanFiles(object):
    """The fast path for the label files of one split: recognises a file of valid, distinct 5-number
    boxes and counts its instances per class into per_class (a list of nc counts). Any other file is
    left to check_text, which finds what is wrong with it, and where."""

    def __init__(self, nc, per_class, keypoint_numbers=0):
        self.per_class = per_class
        self.pending = []  # the clean files, whose classes finish() counts in one pass
        self.pattern = None  # a pose file's lines carry keypoints, and no classes means no valid line
        if nc > 0 and not keypoint_numbers:
            line = integers_below(nc) + GAP + UNIT + GAP + UNIT + GAP + POSITIVE_UNIT + GAP + POSITIVE_UNIT + rb"[ \t]*"
            self.pattern = re.compile(rb"(?:%s\r?\n)*%s(?:\r?\n)?" % (line, line))  # 1 line or more

    def instances(self, data):
        """The instances of a label file's bytes when it is clean, else None. Nearly every file of a
        real dataset is clean, and this runs once per file of millions of lines: one regular
        expression match and one set, in C, with no Python bytecode per line."""
        if self.pattern is None or self.pattern.fullmatch(data) is None:
            return None  # a bad value, another line shape, a blank line: check_text says which
        rows = data.splitlines()
        if len(set(rows)) != len(rows):
            return None  # a duplicate line
        self.pending.append(data)
        return len(rows)

    def finish(self):
        """Add the clean files' instances to per_class."""
        tokens = CLASS_TOKEN.findall(b"\n" + b"\n".join(self.pending))  # clean lines start with their class
        for token, count in collections.Counter(tokens).items():
            self.per_class[int(token)] += count
        self.pending = []


def integers_below(n):
    """A regular expression (bytes) matching the integers in [0, n), n >= 1, written without
    leading zeros, as a clean file writes its class ids."""
    top = str(n - 1)
    if len(top) == 1:
        return b"[0-%s]" % top.encode()
    options = ["[0-9]"] + ["[1-9][0-9]{%d}" % (length - 1) for length in range(2, len(top))]
    for position, digit in enumerate(top):  # numbers as long as top: a smaller digit here, any after
        lowest = 1 if position == 0 else 0
        if int(digit) > lowest:
            rest = len(top) - position - 1
            options.append("%s[%d-%d][0-9]{%d}" % (top[:position], lowest, int(digit) - 1, rest))
    options.append(top)
    return ("(?:%s)" % "|".join(options)).encode()


def check_text(text, nc, per_class, keypoint_numbers=0):
    """Check a label file's text line by line against nc classes, adding its valid instances to
    per_class (a list of nc counts). keypoint_numbers: K * D for pose datasets, 0 otherwise. Returns
    (instances, problems), each problem (kind, line number, detail)."""
    instances, problems = 0, []
    box_columns = 5 + keypoint_numbers
    seen = set()  # for duplicates, which the trainers drop
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        count = len(parts)
        if count == 0:
            continue  # blank lines: the trainers skip them too
        if line in seen:
            problems.append((DUPLICATE_LINE, number, "repeats an earlier line"))
            continue
        seen.add(line)
        if count == 5 and not keypoint_numbers:
            problem = _box(parts)
        elif count == box_columns:
            problem = _box(parts[:5]) or _keypoints(parts[5:])
        elif not keypoint_numbers and count >= POLYGON_MIN_NUMBERS and count % 2 == 1:
            problem = _polygon(parts)
        else:
            problem = (COLUMNS, _columns_detail(count, keypoint_numbers))
        if problem is None:
            problem = _class(parts[0], nc, per_class)
        if problem is None:
            instances += 1
        else:
            problems.append((problem[0], number, problem[1]))
    return instances, problems


def _box(parts):
    try:
        x, y, width, height = float(parts[1]), float(parts[2]), float(parts[3]), float(parts[4])
    except ValueError:
        return _not_a_number(parts)
    # Written so that NaN fails every test: comparisons with NaN are false.
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0 and 0.0 <= width <= 1.0 and 0.0 <= height <= 1.0):
        return COORDINATE_OUT_OF_RANGE, "box %s %s %s %s: each must lie in [0, 1]" % tuple(parts[1:5])
    if width <= 0.0 or height <= 0.0:
        return BOX_NOT_POSITIVE, "box width %s, height %s: both must be above 0" % (parts[3], parts[4])
    return None


def _polygon(parts):
    try:
        xs = [float(value) for value in parts[1::2]]
        ys = [float(value) for value in parts[2::2]]
    except ValueError:
        return _not_a_number(parts)
    for value in xs + ys:
        if not 0.0 <= value <= 1.0:
            return COORDINATE_OUT_OF_RANGE, "polygon point %s: each coordinate must lie in [0, 1]" % value
    if max(xs) <= min(xs) or max(ys) <= min(ys):
        return BOX_NOT_POSITIVE, "polygon of %d points encloses no area" % len(xs)
    return None


def _keypoints(parts):
    try:
        values = [float(value) for value in parts]
    except ValueError:
        return _not_a_number(parts)
    for value in values:
        if not 0.0 <= value <= 2.0:  # x and y in [0, 1]; visibility 0, 1 or 2
            return COORDINATE_OUT_OF_RANGE, "keypoint value %s out of range" % value
    return None


def _class(text, nc, per_class):
    try:
        class_id = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            return NOT_A_NUMBER, "class %r is not a number" % text
        if value != value or not value.is_integer():  # NaN, or 2.5
            return CLASS_NOT_INTEGER, "class %s is not a whole number" % text
        class_id = int(value)
    if not 0 <= class_id < nc:
        return CLASS_OUT_OF_RANGE, "class %d not in [0, %d): the data YAML has %d classes" % (class_id, nc, nc)
    per_class[class_id] += 1
    return None


def _not_a_number(parts):
    for value in parts[1:]:
        try:
            float(value)
        except ValueError:
            return NOT_A_NUMBER, "%r is not a number" % value
    return NOT_A_NUMBER, "unreadable numbers"


def _columns_detail(count, keypoint_numbers):
    if keypoint_numbers:
        return "%d values; this pose dataset's lines have %d" % (count, 5 + keypoint_numbers)
    return "%d values; a box has 5 (class x y w h), a polygon an odd number from 7 on" % count
