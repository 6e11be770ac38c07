//! In-process evaluation of XGBoost `gbtree` models.
//!
//! Models are read from XGBoost's JSON or UBJSON model format (xgboost 1.0
//! and later), bare or inside a SageMaker `model.tar.gz`. Everything about a
//! model file is treated as untrusted: indices, counts and tree shapes are
//! checked while loading, so prediction itself can neither fail nor panic on
//! a loaded model, and only well-formed rows are asked of the caller.
//!
//! All trees are flattened into one node array. Within a tree the nodes are
//! laid out breadth first, and every leaf points back at itself, so a walk
//! of a fixed number of steps (the tree's depth) ends on the leaf whatever
//! path a row takes. That lets several walks advance in lockstep without
//! data-dependent branches: several trees for one row, or one tree for
//! several rows of a batch, which keeps the CPU busy while node loads are in
//! flight.
//!
//! Margins are accumulated in `f32` in tree order starting from the
//! intercept, which is the arithmetic of XGBoost's CPU predictor, so scores
//! agree with XGBoost's to a few ulps.

use std::fmt;
use std::io::{Cursor, Read};
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, IgnoredAny};

use super::ubjson;

/// Nesting limit for trees: XGBoost's `max_depth` is rarely above 20, and a
/// crafted chain of nodes must not make a single walk arbitrarily long.
const MAX_DEPTH: usize = 128;
const MAX_TREES: usize = 1 << 20;
const MAX_NODES_PER_TREE: usize = 1 << 24;
const MAX_TOTAL_NODES: usize = 1 << 27;
/// Feature indices share their word with the default-direction flag.
const MAX_FEATURES: usize = 1 << 30;
/// Decompressed size allowed for a model inside an archive, so that a small
/// gzip bomb cannot take the process down.
const MAX_MEMBER_BYTES: u64 = 1 << 30;

/// Trees walked together for a single row.
const TREE_LANES: usize = 4;
/// Rows walked together through one tree in a batch.
const ROW_LANES: usize = 8;
/// Rows scored tree by tree as one block in a batch: enough to reuse each
/// tree's nodes while they are in cache, few enough for the rows to stay in
/// cache too.
const BLOCK_ROWS: usize = 64;

const SUPPORTED_OBJECTIVES: &str = "binary:logistic, reg:logistic, reg:squarederror";
const RESAVE_HINT: &str = "load it with xgboost >= 1.0 and re-save it as JSON or UBJSON, \
     e.g. `booster.save_model(\"model.json\")`";

/// The learning objectives whose predictions can be reproduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// Probability of the positive class: sigmoid of the margin.
    BinaryLogistic,
    /// Regression on [0, 1]: sigmoid of the margin.
    RegLogistic,
    /// Plain regression: the margin itself.
    RegSquaredError,
}

impl Objective {
    /// The name XGBoost uses for the objective.
    pub fn name(self) -> &'static str {
        match self {
            Objective::BinaryLogistic => "binary:logistic",
            Objective::RegLogistic => "reg:logistic",
            Objective::RegSquaredError => "reg:squarederror",
        }
    }

    fn from_name(name: &str) -> Result<Self, LoadError> {
        match name {
            "binary:logistic" => Ok(Objective::BinaryLogistic),
            "reg:logistic" => Ok(Objective::RegLogistic),
            // The pre-1.0 name of squared error; xgboost itself still loads it
            // as reg:squarederror.
            "reg:squarederror" | "reg:linear" => Ok(Objective::RegSquaredError),
            multi if multi.starts_with("multi:") => Err(LoadError::Unsupported(format!(
                "objective `{multi}` is multi-class, which is not supported; train a \
                 binary:logistic model (one-vs-rest) instead. Supported objectives: \
                 {SUPPORTED_OBJECTIVES}"
            ))),
            other => Err(LoadError::Unsupported(format!(
                "objective `{other}` is not supported; supported objectives: \
                 {SUPPORTED_OBJECTIVES}"
            ))),
        }
    }

    fn is_logistic(self) -> bool {
        matches!(self, Objective::BinaryLogistic | Objective::RegLogistic)
    }

    /// The intercept in margin space: XGBoost stores `base_score` as a
    /// prediction and maps it back through the inverse link when predicting.
    fn prob_to_margin(self, base_score: f32) -> Result<f32, LoadError> {
        if !self.is_logistic() {
            return if base_score.is_finite() {
                Ok(base_score)
            } else {
                Err(LoadError::Invalid(format!(
                    "base_score {base_score} is not finite"
                )))
            };
        }
        if !(base_score > 0.0 && base_score < 1.0) {
            return Err(LoadError::Invalid(format!(
                "base_score {base_score} must lie strictly between 0 and 1 for {}",
                self.name()
            )));
        }
        Ok(-(1.0f32 / base_score - 1.0).ln())
    }

    #[inline]
    fn transform(self, margin: f32) -> f32 {
        match self {
            Objective::BinaryLogistic | Objective::RegLogistic => {
                1.0f32 / (1.0f32 + (-margin).exp())
            }
            Objective::RegSquaredError => margin,
        }
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read model file {}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// A gzip/tar archive that is damaged or holds no single model.
    #[error("model archive: {0}")]
    Archive(String),
    /// Not JSON, UBJSON or an archive: legacy binary, pickle, or not a model.
    #[error("{0}")]
    Format(String),
    /// The bytes are not valid JSON/UBJSON, or not shaped like an XGBoost
    /// model document.
    #[error("malformed XGBoost {format} model: {message}")]
    Parse {
        format: &'static str,
        message: String,
    },
    /// Well-formed but inconsistent: bad indices, cycles, mismatched lengths.
    #[error("invalid XGBoost model: {0}")]
    Invalid(String),
    /// A valid model that this evaluator cannot reproduce faithfully.
    #[error("unsupported XGBoost model: {0}")]
    Unsupported(String),
}

/// One node of the flattened forest.
///
/// `feature` holds the split feature in its low 31 bits and the
/// default-left flag in the top bit. A leaf keeps its value in `threshold`
/// and has both children pointing at itself, so extra steps stay put.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(16))]
struct Node {
    feature: u32,
    threshold: f32,
    left: u32,
    right: u32,
}

const DEFAULT_LEFT: u32 = 1 << 31;
const FEATURE_MASK: u32 = !DEFAULT_LEFT;

impl Node {
    #[inline(always)]
    fn next(&self, row: &[f32]) -> u32 {
        let x = row[(self.feature & FEATURE_MASK) as usize];
        let go_left = if x.is_nan() {
            self.feature & DEFAULT_LEFT != 0
        } else {
            x < self.threshold
        };
        if go_left { self.left } else { self.right }
    }
}

/// Walks `N` trees (or one tree `N` times) in lockstep for `depth` steps.
#[inline(always)]
fn descend<const N: usize>(
    nodes: &[Node],
    mut at: [u32; N],
    rows: [&[f32]; N],
    depth: u32,
) -> [u32; N] {
    for _ in 0..depth {
        for lane in 0..N {
            at[lane] = nodes[at[lane] as usize].next(rows[lane]);
        }
    }
    at
}

/// A loaded, validated `gbtree` model; immutable and cheap to share.
pub struct XgbModel {
    nodes: Vec<Node>,
    /// Index of each tree's root in `nodes`, in boosting order.
    roots: Vec<u32>,
    /// Steps from each tree's root to its deepest leaf.
    depths: Vec<u32>,
    /// Deepest tree in each group of `TREE_LANES` consecutive trees.
    group_depths: Vec<u32>,
    base_margin: f32,
    base_score: f32,
    objective: Objective,
    num_features: usize,
    feature_names: Vec<String>,
}

impl fmt::Debug for XgbModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XgbModel")
            .field("objective", &self.objective.name())
            .field("num_features", &self.num_features)
            .field("num_trees", &self.roots.len())
            .field("num_nodes", &self.nodes.len())
            .field("max_depth", &self.depths.iter().max().copied().unwrap_or(0))
            .field("base_score", &self.base_score)
            .finish_non_exhaustive()
    }
}

impl XgbModel {
    /// Loads a model from the bytes of a JSON or UBJSON model file, or of a
    /// gzipped tar (SageMaker's `model.tar.gz`) holding one. The format is
    /// told from the bytes, never from a file name.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LoadError> {
        if is_gzip(bytes) {
            let document = unpack_gzip(bytes)?;
            return Self::from_document(&document, true);
        }
        Self::from_document(bytes, false)
    }

    /// Reads and loads a model file; see [`XgbModel::from_bytes`].
    pub fn from_path(path: &Path) -> Result<Self, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// Feature names recorded at training time, in input order; empty when
    /// the model was trained without them.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// Values expected in each row.
    pub fn num_features(&self) -> usize {
        self.num_features
    }

    pub fn num_trees(&self) -> usize {
        self.roots.len()
    }

    pub fn objective(&self) -> Objective {
        self.objective
    }

    /// Scores one row of `num_features()` values, `NaN` marking a missing
    /// value.
    ///
    /// # Panics
    ///
    /// If `row` does not hold exactly `num_features()` values.
    pub fn predict_row(&self, row: &[f32]) -> f32 {
        assert_eq!(
            row.len(),
            self.num_features,
            "row has {} values, the model expects {}",
            row.len(),
            self.num_features
        );
        self.objective.transform(self.margin(row))
    }

    /// Scores rows laid out one after another in `rows` into `out`, one score
    /// per row; each score is bit for bit what [`XgbModel::predict_row`]
    /// gives for that row.
    ///
    /// # Panics
    ///
    /// If `rows.len() != out.len() * num_features()`.
    pub fn predict_batch(&self, rows: &[f32], out: &mut [f32]) {
        let width = self.num_features;
        assert_eq!(
            Some(rows.len()),
            out.len().checked_mul(width),
            "{} values given for {} rows of {} features",
            rows.len(),
            out.len(),
            width
        );
        if width == 0 {
            out.fill(self.objective.transform(self.margin(&[])));
            return;
        }
        for (block, scores) in rows
            .chunks(BLOCK_ROWS * width)
            .zip(out.chunks_mut(BLOCK_ROWS))
        {
            self.block_margins(block, scores);
            for score in scores.iter_mut() {
                *score = self.objective.transform(*score);
            }
        }
    }

    fn margin(&self, row: &[f32]) -> f32 {
        let nodes = &self.nodes[..];
        let mut margin = self.base_margin;
        let roots = self.roots.chunks_exact(TREE_LANES);
        let rest = roots.remainder();
        for (group, &depth) in roots.zip(&self.group_depths) {
            let start: [u32; TREE_LANES] = group.try_into().expect("exact chunk");
            let leaves = descend(nodes, start, [row; TREE_LANES], depth);
            // Added one at a time, in tree order, to match XGBoost's sums.
            for leaf in leaves {
                margin += nodes[leaf as usize].threshold;
            }
        }
        let first_rest = self.roots.len() - rest.len();
        for (&root, &depth) in rest.iter().zip(&self.depths[first_rest..]) {
            let [leaf] = descend(nodes, [root], [row], depth);
            margin += nodes[leaf as usize].threshold;
        }
        margin
    }

    /// Margins of up to `BLOCK_ROWS` rows, tree by tree.
    fn block_margins(&self, block: &[f32], margins: &mut [f32]) {
        let nodes = &self.nodes[..];
        let width = self.num_features;
        margins.fill(self.base_margin);
        for (&root, &depth) in self.roots.iter().zip(&self.depths) {
            let mut lanes = block.chunks_exact(ROW_LANES * width);
            let mut sums = margins.chunks_exact_mut(ROW_LANES);
            for (rows, sums) in (&mut lanes).zip(&mut sums) {
                let rows: [&[f32]; ROW_LANES] =
                    std::array::from_fn(|lane| &rows[lane * width..(lane + 1) * width]);
                let leaves = descend(nodes, [root; ROW_LANES], rows, depth);
                for (sum, leaf) in sums.iter_mut().zip(leaves) {
                    *sum += nodes[leaf as usize].threshold;
                }
            }
            for (row, sum) in lanes
                .remainder()
                .chunks_exact(width)
                .zip(sums.into_remainder())
            {
                let [leaf] = descend(nodes, [root], [row], depth);
                *sum += nodes[leaf as usize].threshold;
            }
        }
    }

    fn from_document(bytes: &[u8], from_archive: bool) -> Result<Self, LoadError> {
        let raw: RawDocument = match sniff(bytes) {
            Sniffed::Json => serde_json::from_slice(bytes).map_err(|e| LoadError::Parse {
                format: "JSON",
                message: e.to_string(),
            })?,
            Sniffed::Ubjson => ubjson::from_slice(bytes).map_err(|e| LoadError::Parse {
                format: "UBJSON",
                message: e.to_string(),
            })?,
            Sniffed::Gzip if from_archive => {
                return Err(LoadError::Archive(
                    "the archive member is itself gzip-compressed; expected a JSON or UBJSON \
                     model"
                        .into(),
                ));
            }
            Sniffed::Gzip => unreachable!("archives are unpacked before sniffing"),
            Sniffed::Empty => return Err(LoadError::Format("the model file is empty".into())),
            Sniffed::Pickle => {
                return Err(LoadError::Format(format!(
                    "this is a Python pickle (as older SageMaker XGBoost containers wrote), not \
                     an XGBoost model file; unpickle the Booster with the xgboost that saved it \
                     and save it as JSON or UBJSON, e.g. `booster.save_model(\"model.json\")`; \
                     {RESAVE_HINT}"
                )));
            }
            Sniffed::Other => {
                return Err(LoadError::Format(format!(
                    "not an XGBoost JSON or UBJSON model (nor a model.tar.gz holding one). \
                     XGBoost's legacy binary format (xgboost < 1.0, or `save_model` to a \
                     name without a .json/.ubj extension before xgboost 2.0) is not \
                     supported: {RESAVE_HINT}"
                )));
            }
        };
        build(raw)
    }
}

// ---------------------------------------------------------------------------
// Format detection and archives

enum Sniffed {
    Empty,
    Gzip,
    Json,
    Ubjson,
    Pickle,
    Other,
}

fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Tells the model encodings apart by their first bytes. JSON and UBJSON
/// documents both open with `{`; after it, UBJSON has the integer marker of
/// the first key's length (or `}`, `$`, `#`, a no-op), never whitespace or a
/// quote as JSON does.
fn sniff(bytes: &[u8]) -> Sniffed {
    if bytes.is_empty() {
        return Sniffed::Empty;
    }
    if is_gzip(bytes) {
        return Sniffed::Gzip;
    }
    if bytes[0] == b'{' && matches!(bytes.get(1), Some(b'i' | b'U' | b'I' | b'l' | b'L' | b'$' | b'#' | b'N')) {
        return Sniffed::Ubjson;
    }
    let text = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Sniffed::Json,
        _ if bytes[0] == 0x80 => Sniffed::Pickle,
        _ => Sniffed::Other,
    }
}

/// The model document inside a gzip stream: a tar (SageMaker's
/// `model.tar.gz`) or, leniently, a gzipped model file.
fn unpack_gzip(bytes: &[u8]) -> Result<Vec<u8>, LoadError> {
    let mut gz = flate2::read::GzDecoder::new(bytes);
    let mut head = Vec::with_capacity(512);
    (&mut gz)
        .take(512)
        .read_to_end(&mut head)
        .map_err(|e| LoadError::Archive(format!("cannot decompress: {e}")))?;
    if matches!(sniff(&head), Sniffed::Json | Sniffed::Ubjson) {
        return read_capped(Cursor::new(head).chain(gz), "the gzipped model");
    }
    let mut archive = tar::Archive::new(Cursor::new(head).chain(gz));
    let entries = archive
        .entries()
        .map_err(|e| LoadError::Archive(format!("not a tar archive: {e}")))?;
    let mut members = Vec::new();
    let mut candidates = 0usize;
    let mut candidate = None;
    for entry in entries {
        let entry = entry.map_err(|e| LoadError::Archive(format!("damaged tar archive: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| LoadError::Archive(format!("bad member name: {e}")))?
            .to_string_lossy()
            .into_owned();
        let base = name.rsplit('/').next().unwrap_or(&name).to_string();
        members.push(name.clone());
        // Resource forks that macOS tar adds next to every file.
        if base.starts_with("._") {
            continue;
        }
        if base == "xgboost-model" {
            return read_capped(entry, &name);
        }
        if base.ends_with(".json") || base.ends_with(".ubj") {
            candidates += 1;
            candidate = if candidates == 1 {
                Some(read_capped(entry, &name)?)
            } else {
                None
            };
        }
    }
    match candidate {
        Some(bytes) if candidates == 1 => Ok(bytes),
        _ => {
            const SHOWN: usize = 20;
            let mut listing = members
                .iter()
                .take(SHOWN)
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ");
            if members.len() > SHOWN {
                listing.push_str(&format!(" and {} more", members.len() - SHOWN));
            }
            if listing.is_empty() {
                listing = "none".into();
            }
            Err(LoadError::Archive(format!(
                "expected a member named `xgboost-model` or exactly one *.json or *.ubj \
                 model, found {candidates} candidates; members: {listing}"
            )))
        }
    }
}

fn read_capped(reader: impl Read, what: &str) -> Result<Vec<u8>, LoadError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_MEMBER_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| LoadError::Archive(format!("cannot read {what}: {e}")))?;
    if bytes.len() as u64 > MAX_MEMBER_BYTES {
        return Err(LoadError::Archive(format!(
            "{what} is larger than {MAX_MEMBER_BYTES} bytes once decompressed"
        )));
    }
    Ok(bytes)
}

// ---------------------------------------------------------------------------
// The model document, as far as prediction needs it. Every field is
// optional here, so that a booster or objective we do not support is
// reported as such instead of as a missing field.

#[derive(Deserialize)]
struct RawDocument {
    learner: RawLearner,
}

#[derive(Deserialize)]
struct RawLearner {
    #[serde(default)]
    feature_names: Vec<String>,
    #[serde(default)]
    feature_types: Vec<String>,
    gradient_booster: RawBooster,
    learner_model_param: RawLearnerParam,
    objective: RawObjective,
}

#[derive(Deserialize)]
struct RawObjective {
    name: String,
}

#[derive(Deserialize)]
struct RawLearnerParam {
    base_score: Option<Param>,
    num_class: Option<Param>,
    num_feature: Option<Param>,
    num_target: Option<Param>,
}

#[derive(Deserialize)]
struct RawBooster {
    name: String,
    #[serde(default)]
    model: RawGbtree,
}

#[derive(Deserialize, Default)]
struct RawGbtree {
    #[serde(default)]
    gbtree_model_param: RawGbtreeParam,
    #[serde(default)]
    trees: Vec<RawTree>,
    #[serde(default)]
    tree_info: Vec<i64>,
    #[serde(default)]
    cats: Option<RawCats>,
}

#[derive(Deserialize, Default)]
struct RawGbtreeParam {
    num_trees: Option<Param>,
}

#[derive(Deserialize)]
struct RawCats {
    #[serde(default)]
    enc: Vec<IgnoredAny>,
}

#[derive(Deserialize)]
struct RawTree {
    #[serde(default)]
    tree_param: RawTreeParam,
    #[serde(default)]
    left_children: Vec<i64>,
    #[serde(default)]
    right_children: Vec<i64>,
    #[serde(default)]
    split_indices: Vec<i64>,
    #[serde(default)]
    split_conditions: Vec<f32>,
    #[serde(default)]
    default_left: Vec<Flag>,
    #[serde(default)]
    split_type: Vec<i64>,
    #[serde(default)]
    categories_nodes: Vec<IgnoredAny>,
}

#[derive(Deserialize, Default)]
struct RawTreeParam {
    num_nodes: Option<Param>,
    num_feature: Option<Param>,
    size_leaf_vector: Option<Param>,
}

/// A model parameter: XGBoost writes them as strings ("9", "5E-1",
/// "[1.0285715E-2]"), but numbers are accepted too.
struct Param(String);

impl<'de> Deserialize<'de> for Param {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Param;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a parameter string or number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Param, E> {
                Ok(Param(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Param, E> {
                Ok(Param(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Param, E> {
                Ok(Param(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Param, E> {
                Ok(Param(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `default_left` entries: integers 0/1 in most versions, booleans in some.
struct Flag(bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("0, 1 or a boolean")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Flag, E> {
                match v {
                    0 => Ok(Flag(false)),
                    1 => Ok(Flag(true)),
                    _ => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Flag, E> {
                match v {
                    0 => Ok(Flag(false)),
                    1 => Ok(Flag(true)),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

fn param_usize(param: Option<&Param>, what: &str) -> Result<Option<usize>, LoadError> {
    param
        .map(|p| {
            p.0.trim().parse::<usize>().map_err(|_| {
                LoadError::Invalid(format!("{what} is `{}`, expected a count", p.0))
            })
        })
        .transpose()
}

/// `base_score` as written by xgboost 1.x/2.x ("5E-1") or 3.x, which keeps
/// one intercept per target in brackets ("[1.0285715E-2]").
fn parse_base_score(text: &str) -> Result<f32, LoadError> {
    let inner = text.trim();
    let inner = inner
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(inner);
    let values = inner
        .split(',')
        .map(|v| v.trim().parse::<f32>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| LoadError::Invalid(format!("base_score `{text}` is not a number")))?;
    match values[..] {
        [value] => Ok(value),
        _ => Err(LoadError::Unsupported(format!(
            "base_score `{text}` holds {} intercepts; only single-output models are supported",
            values.len()
        ))),
    }
}

// ---------------------------------------------------------------------------
// Validation and flattening

fn build(raw: RawDocument) -> Result<XgbModel, LoadError> {
    let learner = raw.learner;
    match learner.gradient_booster.name.as_str() {
        "gbtree" => {}
        "dart" => {
            return Err(LoadError::Unsupported(
                "booster `dart` is not supported (its trees carry drop-out weights). Train \
                 with booster=\"gbtree\" and save that model with `booster.save_model(\"model.json\")`"
                    .into(),
            ));
        }
        "gblinear" => {
            return Err(LoadError::Unsupported(
                "booster `gblinear` (a linear model) is not supported; train with \
                 booster=\"gbtree\" and save it with `booster.save_model(\"model.json\")`"
                    .into(),
            ));
        }
        other => {
            return Err(LoadError::Unsupported(format!(
                "booster `{other}` is not supported; only `gbtree` models are"
            )));
        }
    }
    let objective = Objective::from_name(&learner.objective.name)?;

    let param = &learner.learner_model_param;
    if let Some(classes) = param_usize(param.num_class.as_ref(), "num_class")?
        && classes > 1
    {
        return Err(LoadError::Unsupported(format!(
            "the model has num_class = {classes}; multi-class models are not supported, \
             train a binary:logistic model instead"
        )));
    }
    if let Some(targets) = param_usize(param.num_target.as_ref(), "num_target")?
        && targets > 1
    {
        return Err(LoadError::Unsupported(format!(
            "the model has num_target = {targets}; multi-target models are not supported, \
             train one model per target"
        )));
    }
    let num_features = param_usize(param.num_feature.as_ref(), "num_feature")?
        .ok_or_else(|| LoadError::Invalid("learner_model_param.num_feature is missing".into()))?;
    if num_features >= MAX_FEATURES {
        return Err(LoadError::Invalid(format!(
            "num_feature {num_features} is too large"
        )));
    }
    if !learner.feature_names.is_empty() && learner.feature_names.len() != num_features {
        return Err(LoadError::Invalid(format!(
            "{} feature names for num_feature = {num_features}",
            learner.feature_names.len()
        )));
    }
    if let Some(at) = learner.feature_types.iter().position(|t| t == "c") {
        let name = learner
            .feature_names
            .get(at)
            .map_or_else(|| format!("#{at}"), |n| format!("`{n}`"));
        return Err(LoadError::Unsupported(format!(
            "feature {name} is categorical; categorical features are not supported, \
             retrain with numerically encoded features (e.g. ordinal or one-hot)"
        )));
    }
    let base_score = match &param.base_score {
        Some(p) => parse_base_score(&p.0)?,
        // xgboost's default before it started estimating the intercept.
        None => 0.5,
    };
    let base_margin = objective.prob_to_margin(base_score)?;

    let gbtree = learner.gradient_booster.model;
    if gbtree.cats.as_ref().is_some_and(|c| !c.enc.is_empty()) {
        return Err(LoadError::Unsupported(
            "the model embeds a categorical encoding; categorical features are not \
             supported, retrain with numerically encoded features"
                .into(),
        ));
    }
    let trees = gbtree.trees;
    if trees.len() > MAX_TREES {
        return Err(LoadError::Invalid(format!(
            "{} trees exceed the limit of {MAX_TREES}",
            trees.len()
        )));
    }
    if let Some(declared) = param_usize(
        gbtree.gbtree_model_param.num_trees.as_ref(),
        "gbtree_model_param.num_trees",
    )? && declared != trees.len()
    {
        return Err(LoadError::Invalid(format!(
            "gbtree_model_param.num_trees is {declared} but {} trees are stored",
            trees.len()
        )));
    }
    if !gbtree.tree_info.is_empty() {
        if gbtree.tree_info.len() != trees.len() {
            return Err(LoadError::Invalid(format!(
                "tree_info has {} entries for {} trees",
                gbtree.tree_info.len(),
                trees.len()
            )));
        }
        if let Some(group) = gbtree.tree_info.iter().find(|&&g| g != 0) {
            return Err(LoadError::Unsupported(format!(
                "a tree belongs to output group {group}; multi-class / multi-output models \
                 are not supported"
            )));
        }
    }

    let mut flat = Flattener {
        nodes: Vec::new(),
        slot: Vec::new(),
        queue: Vec::new(),
    };
    let mut roots = Vec::with_capacity(trees.len());
    let mut depths = Vec::with_capacity(trees.len());
    for (index, tree) in trees.iter().enumerate() {
        let (root, depth) = flat.add(tree, num_features).map_err(|problem| match problem {
            TreeProblem::Invalid(message) => LoadError::Invalid(format!("tree {index}: {message}")),
            TreeProblem::Unsupported(message) => {
                LoadError::Unsupported(format!("tree {index}: {message}"))
            }
        })?;
        roots.push(root);
        depths.push(depth);
    }
    let group_depths = depths
        .chunks_exact(TREE_LANES)
        .map(|group| group.iter().copied().max().unwrap_or(0))
        .collect();
    let mut nodes = flat.nodes;
    nodes.shrink_to_fit();
    Ok(XgbModel {
        nodes,
        roots,
        depths,
        group_depths,
        base_margin,
        base_score,
        objective,
        num_features,
        feature_names: learner.feature_names,
    })
}

/// Appends trees to the shared node array, checking each as it goes.
struct Flattener {
    nodes: Vec<Node>,
    /// Position in `nodes` given to each original node id of the current
    /// tree, `u32::MAX` while unreached.
    slot: Vec<u32>,
    /// Original ids in breadth-first order, with their depths.
    queue: Vec<(usize, usize)>,
}

enum TreeProblem {
    Invalid(String),
    Unsupported(String),
}

impl From<String> for TreeProblem {
    fn from(message: String) -> Self {
        TreeProblem::Invalid(message)
    }
}

impl From<LoadError> for TreeProblem {
    fn from(error: LoadError) -> Self {
        TreeProblem::Invalid(error.to_string())
    }
}

impl Flattener {
    /// Appends one tree and returns its root and depth.
    fn add(&mut self, tree: &RawTree, num_features: usize) -> Result<(u32, u32), TreeProblem> {
        let declared = param_usize(tree.tree_param.num_nodes.as_ref(), "num_nodes")
            ?;
        let n = declared.unwrap_or(tree.left_children.len());
        if n == 0 {
            return Err(TreeProblem::Invalid("the tree has no nodes".into()));
        }
        if n > MAX_NODES_PER_TREE {
            return Err(format!("{n} nodes exceed the limit of {MAX_NODES_PER_TREE}").into());
        }
        if let Some(leaf_size) = param_usize(tree.tree_param.size_leaf_vector.as_ref(), "size_leaf_vector")
            ?
            && leaf_size > 1
        {
            return Err(TreeProblem::Unsupported(format!(
                "leaves hold vectors of {leaf_size} values; multi-target trees are not supported"
            )));
        }
        if let Some(tree_features) = param_usize(tree.tree_param.num_feature.as_ref(), "num_feature")
            ?
            && tree_features > num_features
        {
            return Err(format!(
                "tree_param.num_feature = {tree_features} exceeds the model's {num_features}"
            ).into());
        }
        let lengths = [
            ("left_children", tree.left_children.len()),
            ("right_children", tree.right_children.len()),
            ("split_indices", tree.split_indices.len()),
            ("split_conditions", tree.split_conditions.len()),
            ("default_left", tree.default_left.len()),
        ];
        for (name, len) in lengths {
            if len != n {
                return Err(format!("{name} has {len} entries for {n} nodes").into());
            }
        }
        if !tree.split_type.is_empty() && tree.split_type.len() != n {
            return Err(format!(
                "split_type has {} entries for {n} nodes",
                tree.split_type.len()
            ).into());
        }
        if !tree.categories_nodes.is_empty() || tree.split_type.iter().any(|&t| t != 0) {
            return Err(TreeProblem::Unsupported(
                "the tree has categorical splits, which are not supported; retrain with \
                 numerically encoded features (e.g. ordinal or one-hot) and without \
                 enable_categorical"
                    .into(),
            ));
        }
        if self.nodes.len() + n > MAX_TOTAL_NODES {
            return Err(format!(
                "the model has more than {MAX_TOTAL_NODES} nodes in total"
            ).into());
        }

        let base = self.nodes.len();
        self.slot.clear();
        self.slot.resize(n, u32::MAX);
        self.queue.clear();
        self.queue.push((0, 0));
        self.slot[0] = base as u32;
        let mut depth = 0;
        let mut next = 0;
        while let Some(&(id, level)) = self.queue.get(next) {
            next += 1;
            let here = self.slot[id];
            let value = tree.split_conditions[id];
            if tree.left_children[id] == -1 {
                if !value.is_finite() {
                    return Err(format!("leaf {id} has the non-finite value {value}").into());
                }
                depth = depth.max(level);
                self.nodes.push(Node {
                    feature: 0,
                    threshold: value,
                    left: here,
                    right: here,
                });
                continue;
            }
            if level + 1 > MAX_DEPTH {
                return Err(format!("the tree is deeper than {MAX_DEPTH} levels").into());
            }
            let feature = tree.split_indices[id];
            if feature < 0 || feature as u64 >= num_features as u64 {
                return Err(format!(
                    "node {id} splits on feature {feature}, but the model has {num_features}"
                ).into());
            }
            if value.is_nan() {
                return Err(format!("node {id} has a NaN split condition").into());
            }
            let mut children = [0u32; 2];
            for (slot, child) in children
                .iter_mut()
                .zip([tree.left_children[id], tree.right_children[id]])
            {
                let child = usize::try_from(child)
                    .ok()
                    .filter(|&c| c < n)
                    .ok_or_else(|| {
                        format!("node {id} has child {child}, outside the tree's {n} nodes")
                    })?;
                if self.slot[child] != u32::MAX {
                    return Err(format!(
                        "node {child} is reached twice (a cycle or shared subtree)"
                    ).into());
                }
                // Breadth-first order: a node's slot is its place in the queue.
                let position = (base + self.queue.len()) as u32;
                self.slot[child] = position;
                self.queue.push((child, level + 1));
                *slot = position;
            }
            let default_left = if tree.default_left[id].0 { DEFAULT_LEFT } else { 0 };
            self.nodes.push(Node {
                feature: feature as u32 | default_left,
                threshold: value,
                left: children[0],
                right: children[1],
            });
        }
        Ok((base as u32, depth as u32))
    }
}
