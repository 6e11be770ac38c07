//! In-process evaluation of XGBoost `gbtree` models.
//!
//! Models are read from XGBoost's JSON or UBJSON model format (xgboost 1.0
//! and later), bare or inside a SageMaker `model.tar.gz`. Everything about a
//! model file is treated as untrusted: indices, counts and tree shapes are
//! checked while loading, so prediction itself can neither fail nor panic on
//! a loaded model, and only well-formed rows are asked of the caller.
//!
//! All trees are flattened into one node array, breadth first within a
//! tree and with each right child right after its left sibling. A leaf
//! never moves on, so a walk of a fixed number of steps (the tree's depth)
//! ends on its leaf whatever path a row takes. That lets several walks
//! advance in lockstep without data-dependent branches (several trees for
//! one row, or one tree for several rows of a batch), which keeps the CPU
//! busy while node loads are in flight. Rows are first turned into integer
//! keys that order like the floats, twice over: with missing values as -inf
//! and as +inf, each split reading the copy that sends missing values its
//! way. A step is then one integer comparison and two additions. The walk
//! skips bounds checks; `Forest::new` checks at load time the invariants
//! that make this sound.
//!
//! Margins are accumulated in `f32` in tree order starting from the
//! intercept, which is the arithmetic of XGBoost's CPU predictor, so scores
//! agree with XGBoost's to a few ulps.

use std::cell::RefCell;
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
/// Expanded rows hold up to `2 * ROW_LANES` keys per feature.
const MAX_FEATURES: usize = 1 << 24;
/// Decompressed size allowed for a model inside an archive, so that a small
/// gzip bomb cannot take the process down.
const MAX_MEMBER_BYTES: u64 = 1 << 30;

/// Trees walked together for a single row.
const TREE_LANES: usize = 12;
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

/// A node of the flattened forest, before it is packed for the walk.
///
/// Values are compared as order-preserving integer keys ([`key`]), which
/// is cheaper than a float comparison on the critical path. `feature`
/// picks the split's key in a row expanded by [`expand_row`], which also
/// encodes where the split sends missing values. The right child always follows the left
/// one, `offset` nodes after this one, so a step is two additions. A leaf
/// has offset 0 and a threshold above every key, so every step from a leaf
/// stays on it and walks of different lengths can share one loop.
#[derive(Clone, Copy, Debug)]
struct FlatNode {
    feature: u32,
    threshold: u32,
    offset: u32,
    /// The leaf's value (unused in internal nodes).
    value: f32,
}

const LEAF_THRESHOLD: u32 = u32::MAX;

impl FlatNode {
    fn leaf(value: f32) -> Self {
        FlatNode {
            feature: 0,
            threshold: LEAF_THRESHOLD,
            offset: 0,
            value,
        }
    }
}

/// How nodes are packed for the walk: [`Compact`] whenever the model fits,
/// which halves the memory the walk touches, else [`Wide`].
trait Layout: Copy + fmt::Debug + Send + Sync + 'static {
    const NAME: &'static str;
    /// Whether the rows of a group interleave, `ROW_LANES` keys per
    /// expanded feature, which puts each lane's key at a constant offset
    /// from the others'; else they follow one another, and a single row
    /// takes no more scratch than its own keys.
    const INTERLEAVED: bool;
    const STRIDE: usize = if Self::INTERLEAVED { ROW_LANES } else { 1 };
    /// The node with its feature as an offset into a row laid out with
    /// `STRIDE`, if it fits.
    fn pack(node: &FlatNode) -> Option<Self>;
    fn feature(&self) -> usize;
    fn threshold(&self) -> u32;
    fn offset(&self) -> usize;
}

#[derive(Clone, Copy, Debug)]
#[repr(C, align(8))]
struct Compact {
    threshold: u32,
    feature: u16,
    offset: u16,
}

impl Layout for Compact {
    const NAME: &'static str = "compact";
    const INTERLEAVED: bool = true;

    fn pack(node: &FlatNode) -> Option<Self> {
        let feature = (node.feature as usize).checked_mul(Self::STRIDE)?;
        Some(Compact {
            threshold: node.threshold,
            feature: feature.try_into().ok()?,
            offset: node.offset.try_into().ok()?,
        })
    }

    #[inline(always)]
    fn feature(&self) -> usize {
        self.feature.into()
    }

    #[inline(always)]
    fn threshold(&self) -> u32 {
        self.threshold
    }

    #[inline(always)]
    fn offset(&self) -> usize {
        self.offset.into()
    }
}

#[derive(Clone, Copy, Debug)]
#[repr(C, align(16))]
struct Wide {
    threshold: u32,
    feature: u32,
    offset: u32,
}

impl Layout for Wide {
    const NAME: &'static str = "wide";
    const INTERLEAVED: bool = false;

    fn pack(node: &FlatNode) -> Option<Self> {
        Some(Wide {
            threshold: node.threshold,
            feature: node.feature,
            offset: node.offset,
        })
    }

    #[inline(always)]
    fn feature(&self) -> usize {
        self.feature as usize
    }

    #[inline(always)]
    fn threshold(&self) -> u32 {
        self.threshold
    }

    #[inline(always)]
    fn offset(&self) -> usize {
        self.offset as usize
    }
}

/// Maps a non-NaN float to an integer with the same order, so that
/// `x < t` iff `key(x) < key(t)`. Negative zero is folded onto zero first,
/// as the float comparison treats them as equal. Keys run from 0x007f_ffff
/// (-inf) to 0xff80_0000 (+inf), so `LEAF_THRESHOLD` is above them all.
#[inline(always)]
fn key(x: f32) -> u32 {
    let bits = (x + 0.0).to_bits();
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// Writes the keys of `row` twice into `out`, `stride` apart from one value
/// to the next: first with missing values as -inf, then as +inf. A split
/// that sends missing values left reads the first copy and one that sends
/// them right the second, so that a single comparison with the (finite)
/// threshold routes present and missing values alike.
#[inline(always)]
fn expand_row(row: &[f32], out: &mut [u32], stride: usize) {
    let (low, high) = out.split_at_mut(row.len() * stride);
    for (i, &x) in row.iter().enumerate() {
        let (below, above) = if x.is_nan() {
            (key(f32::NEG_INFINITY), key(f32::INFINITY))
        } else {
            (key(x), key(x))
        };
        low[i * stride] = below;
        high[i * stride] = above;
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` scratch keys kept per thread, which allocates only
/// when a thread first meets a model or batch that needs more. The keys are
/// left as the last call wrote them: callers write what they read.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u32]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut keys = cell.borrow_mut();
        if keys.len() < len {
            keys.resize(len, 0);
        }
        f(&mut keys[..len])
    })
}

/// The flattened trees and the order to walk them in, together with the
/// invariants that let the walk skip bounds checks. Only [`Forest::new`]
/// builds one, and it checks them.
struct Forest<L> {
    nodes: Vec<L>,
    /// Leaf values, by node.
    values: Vec<f32>,
    /// Each tree's root, in boosting order.
    roots: Vec<usize>,
    /// Steps from each tree's root to its deepest leaf.
    depths: Vec<u32>,
    /// Deepest tree in each group of `TREE_LANES` consecutive trees.
    group_depths: Vec<u32>,
    shape: Shape<L>,
}

/// Where the keys of expanded rows lie in scratch, for layout `L`.
struct Shape<L> {
    num_features: usize,
    /// Keys of one expanded row on its own.
    row_keys: usize,
    /// Keys of a group of `ROW_LANES` expanded rows.
    group_keys: usize,
    layout: std::marker::PhantomData<L>,
}

impl<L: Layout> Shape<L> {
    fn new(num_features: usize) -> Self {
        Shape {
            num_features,
            row_keys: 2 * num_features * L::STRIDE,
            group_keys: 2 * num_features * ROW_LANES,
            layout: std::marker::PhantomData,
        }
    }

    /// Where the keys of a group's lane `lane` start.
    #[inline(always)]
    fn lane_start(&self, lane: usize) -> usize {
        if L::INTERLEAVED {
            lane
        } else {
            lane * 2 * self.num_features
        }
    }
}

impl<L: Layout> Forest<L> {
    /// Packs `flat` if every node fits `L`, and accepts it only if every walk
    /// stays in bounds: roots lie inside `nodes`, a leaf (offset 0) never
    /// moves, an internal node's two children lie inside `nodes`, and every
    /// key that a lane of a group reads lies inside the group's expanded
    /// rows, and in a single row. Without features there are no keys, so
    /// nothing may be walked.
    /// The last node must be a leaf, which pads partial groups of trees.
    fn new(
        flat: &[FlatNode],
        roots: Vec<usize>,
        depths: Vec<u32>,
        num_features: usize,
    ) -> Option<Forest<L>> {
        let nodes = flat.iter().map(L::pack).collect::<Option<Vec<L>>>()?;
        let len = nodes.len();
        let shape = Shape::<L>::new(num_features);
        let nodes_ok = nodes.iter().enumerate().all(|(at, node)| {
            // Every lane of a group, and a single row, must find the key.
            let feature = node.feature();
            let feature_ok = num_features == 0
                || (feature < shape.row_keys
                    && shape.lane_start(ROW_LANES - 1) + feature < shape.group_keys);
            let links_ok = match node.offset() {
                0 => node.threshold() == LEAF_THRESHOLD,
                offset => at + offset + 1 < len,
            };
            feature_ok && links_ok
        });
        let padding_ok = nodes.last().is_some_and(|n| n.offset() == 0);
        let roots_ok = roots.len() == depths.len() && roots.iter().all(|&r| r < len);
        let walks_ok = num_features > 0 || depths.iter().all(|&d| d == 0);
        if !(nodes_ok && padding_ok && roots_ok && walks_ok) {
            return None;
        }
        let group_depths = depths
            .chunks(TREE_LANES)
            .map(|group| group.iter().copied().max().unwrap_or(0))
            .collect();
        Some(Forest {
            nodes,
            values: flat.iter().map(|n| n.value).collect(),
            roots,
            depths,
            group_depths,
            shape,
        })
    }

    /// One step of a walk from node `at`, for the row whose expanded keys
    /// start at `keys[0]`.
    ///
    /// # Safety
    ///
    /// `at` must index `self.nodes`, the model must have features, and
    /// `keys` must be a single expanded row or the keys of a group from a
    /// lane's start on.
    #[inline(always)]
    unsafe fn step(&self, at: usize, keys: &[u32]) -> usize {
        // SAFETY: the caller keeps `at` inside `nodes`; `Forest::new`
        // checked that with features every node's key lies inside a single
        // row and inside every lane's part of a group, which `keys` is.
        let node = unsafe { self.nodes.get_unchecked(at) };
        let x = unsafe { *keys.get_unchecked(node.feature()) };
        // Left iff x < threshold, as in XGBoost. No branches: which way a
        // split goes is data, and mispredictions would cost more than the
        // walk.
        at + (node.offset() + (x >= node.threshold()) as usize)
    }

    /// Walks `N` trees in lockstep for `depth` steps from the roots in
    /// `at`, for one expanded row, and returns the leaves reached. A fixed
    /// number of walks lets them all live in registers.
    #[inline(always)]
    fn descend_trees<const N: usize>(
        &self,
        mut at: [usize; N],
        keys: &[u32],
        depth: u32,
    ) -> [usize; N] {
        assert!(keys.len() == self.shape.row_keys);
        assert!(at.iter().all(|&a| a < self.nodes.len()));
        assert!(depth == 0 || self.shape.num_features > 0);
        for _ in 0..depth {
            for a in at.iter_mut() {
                // SAFETY: `*a` starts inside `nodes` (checked above) and
                // `Forest::new` checked that every step from inside lands
                // inside; `keys` is one expanded row (checked above).
                *a = unsafe { self.step(*a, keys) };
            }
        }
        at
    }

    /// Walks one tree in lockstep for the `ROW_LANES` rows of a group of
    /// expanded rows, and returns the leaves reached.
    #[inline(always)]
    fn descend_rows(&self, root: usize, keys: &[u32], depth: u32) -> [usize; ROW_LANES] {
        assert!(keys.len() == self.shape.group_keys);
        assert!(root < self.nodes.len());
        let mut at = [root; ROW_LANES];
        if depth == 0 {
            return at;
        }
        assert!(self.shape.num_features > 0);
        // Every row starts at the root: its fields are read once for all.
        let node = self.nodes[root];
        for (lane, a) in at.iter_mut().enumerate() {
            // SAFETY: as in `step`, for the lane's part of the group.
            let x = unsafe { *keys.get_unchecked(self.shape.lane_start(lane) + node.feature()) };
            *a = root + (node.offset() + (x >= node.threshold()) as usize);
        }
        let level = |at: &mut [usize; ROW_LANES]| {
            for (lane, a) in at.iter_mut().enumerate() {
                // SAFETY: as in `descend_trees`, for the keys of the group
                // from the lane's start on.
                let lane_keys = unsafe { keys.get_unchecked(self.shape.lane_start(lane)..) };
                *a = unsafe { self.step(*a, lane_keys) };
            }
        };
        // Two levels per iteration spare the register shuffle that a
        // loop-carried state of this size otherwise costs at every level.
        for _ in 0..(depth - 1) / 2 {
            level(&mut at);
            level(&mut at);
        }
        if (depth - 1) % 2 == 1 {
            level(&mut at);
        }
        at
    }

    /// The margin of one row, starting from `base`.
    fn row_margin(&self, base: f32, row: &[f32]) -> f32 {
        with_scratch(self.shape.row_keys, |keys| {
            expand_row(row, keys, L::STRIDE);
            self.margin(base, keys)
        })
    }

    /// The margin of one row expanded by [`expand_row`], starting from
    /// `base`.
    fn margin(&self, base: f32, keys: &[u32]) -> f32 {
        // The padding leaf fills the spare lanes of a last, partial group;
        // every step leaves it in place.
        let padding = self.nodes.len() - 1;
        let mut margin = base;
        for (roots, &depth) in self.roots.chunks(TREE_LANES).zip(&self.group_depths) {
            let mut start = [padding; TREE_LANES];
            start[..roots.len()].copy_from_slice(roots);
            let leaves = self.descend_trees(start, keys, depth);
            // Added one at a time, in tree order, to match XGBoost's sums.
            for &leaf in &leaves[..roots.len()] {
                margin += self.values[leaf];
            }
        }
        margin
    }

    /// Scores of whole rows of `num_features` values in `rows`, written
    /// through `transform` into `out`, block by block.
    fn batch(&self, base: f32, rows: &[f32], out: &mut [f32], transform: impl Fn(f32) -> f32) {
        let width = self.shape.num_features;
        let group_keys = self.shape.group_keys;
        let groups = BLOCK_ROWS.min(out.len()).div_ceil(ROW_LANES);
        with_scratch(group_keys * groups, |keys| {
            for (block, scores) in rows
                .chunks(BLOCK_ROWS * width)
                .zip(out.chunks_mut(BLOCK_ROWS))
            {
                let n = scores.len();
                let keys = &mut keys[..n.div_ceil(ROW_LANES) * group_keys];
                for (g, group) in keys.chunks_exact_mut(group_keys).enumerate() {
                    for lane in 0..ROW_LANES {
                        // A last, partial group repeats its last row; those
                        // lanes' scores are dropped.
                        let r = (g * ROW_LANES + lane).min(n - 1);
                        let lane_keys = &mut group[self.shape.lane_start(lane)..];
                        expand_row(&block[r * width..(r + 1) * width], lane_keys, L::STRIDE);
                    }
                }
                self.block_margins(base, keys, scores);
                for score in scores.iter_mut() {
                    *score = transform(*score);
                }
            }
        });
    }

    /// Margins, starting from `base`, of up to `BLOCK_ROWS` rows given as
    /// groups of `ROW_LANES` expanded rows; tree by tree, so that each
    /// tree's nodes are fetched once for the block.
    fn block_margins(&self, base: f32, keys: &[u32], margins: &mut [f32]) {
        margins.fill(base);
        for (&root, &depth) in self.roots.iter().zip(&self.depths) {
            for (group, sums) in keys
                .chunks_exact(self.shape.group_keys)
                .zip(margins.chunks_mut(ROW_LANES))
            {
                let leaves = self.descend_rows(root, group, depth);
                for (sum, leaf) in sums.iter_mut().zip(leaves) {
                    *sum += self.values[leaf];
                }
            }
        }
    }
}

/// The forest in whichever layout the model fits.
enum Trees {
    Compact(Forest<Compact>),
    Wide(Forest<Wide>),
}

impl Trees {
    fn build(
        flat: &[FlatNode],
        roots: Vec<usize>,
        depths: Vec<u32>,
        num_features: usize,
    ) -> Option<Trees> {
        match Forest::new(flat, roots.clone(), depths.clone(), num_features) {
            Some(forest) => Some(Trees::Compact(forest)),
            None => Forest::new(flat, roots, depths, num_features).map(Trees::Wide),
        }
    }

    fn row_margin(&self, base: f32, row: &[f32]) -> f32 {
        match self {
            Trees::Compact(forest) => forest.row_margin(base, row),
            Trees::Wide(forest) => forest.row_margin(base, row),
        }
    }

    fn batch(&self, base: f32, rows: &[f32], out: &mut [f32], transform: impl Fn(f32) -> f32) {
        match self {
            Trees::Compact(forest) => forest.batch(base, rows, out, transform),
            Trees::Wide(forest) => forest.batch(base, rows, out, transform),
        }
    }

    /// Trees, nodes, deepest tree and layout, for `Debug`.
    fn summary(&self) -> (usize, usize, u32, &'static str) {
        fn of<L: Layout>(f: &Forest<L>) -> (usize, usize, u32, &'static str) {
            let depth = f.depths.iter().copied().max().unwrap_or(0);
            (f.roots.len(), f.nodes.len(), depth, L::NAME)
        }
        match self {
            Trees::Compact(forest) => of(forest),
            Trees::Wide(forest) => of(forest),
        }
    }
}

/// A loaded, validated `gbtree` model; immutable and cheap to share.
pub struct XgbModel {
    trees: Trees,
    base_margin: f32,
    base_score: f32,
    objective: Objective,
    num_features: usize,
    feature_names: Vec<String>,
}

impl fmt::Debug for XgbModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (trees, nodes, depth, layout) = self.trees.summary();
        f.debug_struct("XgbModel")
            .field("objective", &self.objective.name())
            .field("num_features", &self.num_features)
            .field("num_trees", &trees)
            .field("num_nodes", &nodes)
            .field("max_depth", &depth)
            .field("layout", &layout)
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
            return Self::from_document(&document);
        }
        Self::from_document(bytes)
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

    /// Trees in the ensemble (boosting rounds times parallel trees).
    pub fn num_trees(&self) -> usize {
        match &self.trees {
            Trees::Compact(forest) => forest.roots.len(),
            Trees::Wide(forest) => forest.roots.len(),
        }
    }

    /// The objective, which decides how margins become scores.
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
        self.objective
            .transform(self.trees.row_margin(self.base_margin, row))
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
            out.fill(self.predict_row(&[]));
            return;
        }
        let objective = self.objective;
        self.trees.batch(self.base_margin, rows, out, |margin| {
            objective.transform(margin)
        });
    }

    /// Loads a bare JSON or UBJSON document (a gzip stream here can only be
    /// an archive's member).
    fn from_document(bytes: &[u8]) -> Result<Self, LoadError> {
        let raw: RawDocument = match sniff(bytes) {
            Sniffed::Json => {
                serde_json::from_slice(strip_bom(bytes)).map_err(|e| LoadError::Parse {
                    format: "JSON",
                    message: e.to_string(),
                })?
            }
            Sniffed::Ubjson => ubjson::from_slice(bytes).map_err(|e| LoadError::Parse {
                format: "UBJSON",
                message: e.to_string(),
            })?,
            Sniffed::Gzip => {
                return Err(LoadError::Archive(
                    "the archive member is itself gzip-compressed; expected a JSON or UBJSON \
                     model"
                        .into(),
                ));
            }
            Sniffed::Empty => return Err(LoadError::Format("the model file is empty".into())),
            Sniffed::Pickle => {
                return Err(LoadError::Format(
                    "this is a Python pickle (as older SageMaker XGBoost containers wrote), not \
                     an XGBoost model file: unpickle the Booster with the xgboost version that \
                     saved it and save it as JSON or UBJSON, e.g. \
                     `booster.save_model(\"model.json\")`"
                        .into(),
                ));
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
    if bytes[0] == b'{'
        && matches!(
            bytes.get(1),
            Some(b'i' | b'U' | b'I' | b'l' | b'L' | b'$' | b'#' | b'N')
        )
    {
        return Sniffed::Ubjson;
    }
    match strip_bom(bytes).iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Sniffed::Json,
        _ if bytes[0] == 0x80 => Sniffed::Pickle,
        _ => Sniffed::Other,
    }
}

/// Editors on Windows like to prefix JSON with a byte-order mark, which the
/// JSON parser does not accept.
fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes)
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
            p.0.trim()
                .parse::<usize>()
                .map_err(|_| LoadError::Invalid(format!("{what} is `{}`, expected a count", p.0)))
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
                 with booster=\"gbtree\" and save that model with \
                 `booster.save_model(\"model.json\")`"
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
        let (root, depth) = flat
            .add(tree, num_features)
            .map_err(|problem| match problem {
                TreeProblem::Invalid(message) => {
                    LoadError::Invalid(format!("tree {index}: {message}"))
                }
                TreeProblem::Unsupported(message) => {
                    LoadError::Unsupported(format!("tree {index}: {message}"))
                }
            })?;
        roots.push(root as usize);
        depths.push(depth);
    }
    let mut nodes = flat.nodes;
    // The padding leaf that `Forest::margin` walks in spare lanes.
    nodes.push(FlatNode::leaf(0.0));
    let trees = Trees::build(&nodes, roots, depths, num_features).ok_or_else(|| {
        LoadError::Invalid("the flattened trees failed their consistency check".into())
    })?;
    Ok(XgbModel {
        trees,
        base_margin,
        base_score,
        objective,
        num_features,
        feature_names: learner.feature_names,
    })
}

/// Appends trees to the shared node array, checking each as it goes.
struct Flattener {
    nodes: Vec<FlatNode>,
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
        let declared = param_usize(tree.tree_param.num_nodes.as_ref(), "num_nodes")?;
        let n = declared.unwrap_or(tree.left_children.len());
        if n == 0 {
            return Err(TreeProblem::Invalid("the tree has no nodes".into()));
        }
        if n > MAX_NODES_PER_TREE {
            return Err(format!("{n} nodes exceed the limit of {MAX_NODES_PER_TREE}").into());
        }
        if let Some(leaf_size) = param_usize(
            tree.tree_param.size_leaf_vector.as_ref(),
            "size_leaf_vector",
        )? && leaf_size > 1
        {
            return Err(TreeProblem::Unsupported(format!(
                "leaves hold vectors of {leaf_size} values; multi-target trees are not supported"
            )));
        }
        if let Some(tree_features) =
            param_usize(tree.tree_param.num_feature.as_ref(), "num_feature")?
            && tree_features > num_features
        {
            return Err(format!(
                "tree_param.num_feature = {tree_features} exceeds the model's {num_features}"
            )
            .into());
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
            )
            .into());
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
            return Err(format!("the model has more than {MAX_TOTAL_NODES} nodes in total").into());
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
                self.nodes.push(FlatNode::leaf(value));
                continue;
            }
            if level + 1 > MAX_DEPTH {
                return Err(format!("the tree is deeper than {MAX_DEPTH} levels").into());
            }
            let feature = tree.split_indices[id];
            if feature < 0 || feature as u64 >= num_features as u64 {
                return Err(format!(
                    "node {id} splits on feature {feature}, but the model has {num_features}"
                )
                .into());
            }
            // Missing values are routed by comparing an infinity with the
            // threshold, which needs a finite one; XGBoost only writes finite
            // split conditions.
            if !value.is_finite() {
                return Err(format!("node {id} has the non-finite split condition {value}").into());
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
                    )
                    .into());
                }
                // Breadth-first order: a node's slot is its place in the queue.
                let position = (base + self.queue.len()) as u32;
                self.slot[child] = position;
                self.queue.push((child, level + 1));
                *slot = position;
            }
            let missing_right = if tree.default_left[id].0 {
                0
            } else {
                num_features
            };
            self.nodes.push(FlatNode {
                feature: (feature as usize + missing_right) as u32,
                threshold: key(value),
                // children[1] == children[0] + 1: both were queued together.
                offset: children[0] - here,
                value: 0.0,
            });
        }
        Ok((base as u32, depth as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn tree(left: &[i64], right: &[i64], feature: &[i64], cond: &[f32], dl: &[u8]) -> Value {
        let n = left.len();
        json!({
            "base_weights": cond,
            "categories": [],
            "categories_nodes": [],
            "categories_segments": [],
            "categories_sizes": [],
            "default_left": dl,
            "id": 0,
            "left_children": left,
            "loss_changes": vec![0.0; n],
            "parents": vec![2147483647; n],
            "right_children": right,
            "split_conditions": cond,
            "split_indices": feature,
            "split_type": vec![0; n],
            "sum_hessian": vec![1.0; n],
            "tree_param": {
                "num_deleted": "0",
                "num_feature": "2",
                "num_nodes": n.to_string(),
                "size_leaf_vector": "1"
            }
        })
    }

    /// f0 < 0.5 ? -1 : 2, with missing values going left when `dl` is 1.
    fn stump(dl: u8) -> Value {
        tree(
            &[1, -1, -1],
            &[2, -1, -1],
            &[0, 0, 0],
            &[0.5, -1.0, 2.0],
            &[dl, 0, 0],
        )
    }

    fn leaf(value: f32) -> Value {
        tree(&[-1], &[-1], &[0], &[value], &[0])
    }

    fn model(objective: &str, base_score: &str, trees: Vec<Value>) -> Value {
        let n = trees.len();
        json!({
            "learner": {
                "attributes": {},
                "feature_names": ["f0", "f1"],
                "feature_types": ["float", "float"],
                "gradient_booster": {
                    "model": {
                        "cats": {"enc": [], "feature_segments": [], "sorted_idx": []},
                        "gbtree_model_param": {"num_parallel_tree": "1", "num_trees": n.to_string()},
                        "iteration_indptr": (0..=n).collect::<Vec<_>>(),
                        "tree_info": vec![0; n],
                        "trees": trees
                    },
                    "name": "gbtree"
                },
                "learner_model_param": {
                    "base_score": base_score,
                    "boost_from_average": "1",
                    "num_class": "0",
                    "num_feature": "2",
                    "num_target": "1"
                },
                "objective": {"name": objective, "reg_loss_param": {"scale_pos_weight": "1"}}
            },
            "version": [3, 2, 0]
        })
    }

    fn load(value: &Value) -> Result<XgbModel, LoadError> {
        XgbModel::from_bytes(&serde_json::to_vec(value).unwrap())
    }

    fn load_err(value: &Value) -> String {
        load(value).expect_err("must be refused").to_string()
    }

    /// Encodes a JSON value the way xgboost writes UBJSON: 64-bit lengths,
    /// typed arrays for numbers.
    fn to_ubjson(value: &Value) -> Vec<u8> {
        fn length(out: &mut Vec<u8>, n: usize) {
            out.push(b'L');
            out.extend_from_slice(&(n as i64).to_be_bytes());
        }
        fn scalar(out: &mut Vec<u8>, value: &Value, typed: Option<u8>) {
            match value {
                Value::Null => out.push(b'Z'),
                Value::Bool(b) => out.push(if *b { b'T' } else { b'F' }),
                Value::Number(n) => {
                    if let Some(i) = n.as_i64() {
                        if typed.is_none() {
                            out.push(b'l');
                        }
                        out.extend_from_slice(&(i as i32).to_be_bytes());
                    } else {
                        if typed.is_none() {
                            out.push(b'd');
                        }
                        out.extend_from_slice(&(n.as_f64().unwrap() as f32).to_be_bytes());
                    }
                }
                Value::String(s) => {
                    out.push(b'S');
                    length(out, s.len());
                    out.extend_from_slice(s.as_bytes());
                }
                Value::Array(items) => {
                    let ty = if !items.is_empty() && items.iter().all(|v| v.is_i64()) {
                        Some(b'l')
                    } else if !items.is_empty() && items.iter().all(|v| v.is_number()) {
                        Some(b'd')
                    } else {
                        None
                    };
                    out.push(b'[');
                    if let Some(ty) = ty {
                        out.extend_from_slice(&[b'$', ty]);
                    }
                    out.push(b'#');
                    length(out, items.len());
                    for item in items {
                        scalar(out, item, ty);
                    }
                }
                Value::Object(map) => {
                    out.push(b'{');
                    for (key, item) in map {
                        length(out, key.len());
                        out.extend_from_slice(key.as_bytes());
                        scalar(out, item, None);
                    }
                    out.push(b'}');
                }
            }
        }
        let mut out = Vec::new();
        scalar(&mut out, value, None);
        out
    }

    fn targz(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        gzip(&tar)
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    /// A small deterministic generator, so failures reproduce.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    #[test]
    fn stump_splits_on_less_than_and_routes_missing_values() {
        for (dl, missing) in [(1, -0.5), (0, 2.5)] {
            let m = load(&model("reg:squarederror", "5E-1", vec![stump(dl)])).unwrap();
            assert_eq!(m.num_trees(), 1);
            assert_eq!(m.num_features(), 2);
            assert_eq!(m.feature_names(), ["f0", "f1"]);
            assert_eq!(m.objective(), Objective::RegSquaredError);
            assert_eq!(m.predict_row(&[0.2, 9.0]), -0.5);
            assert_eq!(m.predict_row(&[0.5, 9.0]), 2.5, "equal goes right");
            assert_eq!(m.predict_row(&[f32::INFINITY, 0.0]), 2.5);
            assert_eq!(m.predict_row(&[f32::NEG_INFINITY, 0.0]), -0.5);
            assert_eq!(
                m.predict_row(&[f32::NAN, 0.0]),
                missing,
                "default_left {dl}"
            );
        }
    }

    #[test]
    fn missing_values_follow_default_left_at_every_level() {
        // f0 < 0 ? (f1 < 1 ? 10 : 20) : (f1 < 2 ? 30 : 40)
        let t = tree(
            &[1, 3, 5, -1, -1, -1, -1],
            &[2, 4, 6, -1, -1, -1, -1],
            &[0, 1, 1, 0, 0, 0, 0],
            &[0.0, 1.0, 2.0, 10.0, 20.0, 30.0, 40.0],
            &[0, 1, 0, 0, 0, 0, 0],
        );
        let m = load(&model("reg:squarederror", "0E0", vec![t])).unwrap();
        let cases = [
            ([-1.0, 0.0], 10.0),
            ([-1.0, 1.0], 20.0),
            ([-1.0, f32::NAN], 10.0),
            ([1.0, f32::NAN], 40.0),
            ([f32::NAN, 1.5], 30.0),
            ([f32::NAN, f32::NAN], 40.0),
        ];
        for (row, want) in cases {
            assert_eq!(m.predict_row(&row), want, "{row:?}");
        }
    }

    #[test]
    fn signed_zeros_and_infinities_compare_like_floats() {
        // f0 < 0 ? -1 : 2 ; f0 < -inf never holds, and +inf is not below 0.
        let mut t = stump(0);
        t["split_conditions"] = json!([0.0, -1.0, 2.0]);
        let m = load(&model("reg:squarederror", "0E0", vec![t])).unwrap();
        assert_eq!(m.predict_row(&[-0.0, 0.0]), 2.0, "-0 is not below 0");
        assert_eq!(m.predict_row(&[0.0, 0.0]), 2.0);
        assert_eq!(m.predict_row(&[-1e-45, 0.0]), -1.0, "negative subnormal");
        assert_eq!(m.predict_row(&[f32::MIN, 0.0]), -1.0);
        assert_eq!(m.predict_row(&[f32::INFINITY, 0.0]), 2.0);
        let mut t = stump(1);
        t["split_conditions"] = json!([-0.0, -1.0, 2.0]);
        let m = load(&model("reg:squarederror", "0E0", vec![t])).unwrap();
        assert_eq!(m.predict_row(&[0.0, 0.0]), 2.0, "0 is not below -0");
        assert_eq!(m.predict_row(&[-f32::MIN_POSITIVE, 0.0]), -1.0);
        assert_eq!(m.predict_row(&[f32::NEG_INFINITY, 0.0]), -1.0);
        assert_eq!(m.predict_row(&[f32::NAN, 0.0]), -1.0);
    }

    #[test]
    fn wide_models_use_the_wide_layout_and_agree() {
        let width = 5000;
        let mut t = stump(0);
        t["split_indices"] = json!([width - 1, 0, 0]);
        let mut doc = model("reg:squarederror", "0E0", vec![t, leaf(0.5), stump(1)]);
        doc["learner"]["learner_model_param"]["num_feature"] = json!(width.to_string());
        doc["learner"]["feature_names"] = json!([]);
        doc["learner"]["feature_types"] = json!([]);
        let m = load(&doc).unwrap();
        assert!(format!("{m:?}").contains("wide"), "{m:?}");
        let mut rows = vec![0.0f32; 3 * width];
        rows[width - 1] = 0.7; // row 0: tree 0 right, tree 2 left
        rows[width] = f32::NAN; // row 1: tree 0 left, tree 2 missing -> left
        rows[2 * width] = 0.9; // row 2: tree 0 left, tree 2 right
        rows[3 * width - 1] = f32::NAN; // row 2: tree 0 missing -> right
        let want = [2.0 + 0.5 - 1.0, -1.0 + 0.5 - 1.0, 2.0 + 0.5 + 2.0];
        let mut out = [0.0; 3];
        m.predict_batch(&rows, &mut out);
        assert_eq!(out, want);
        for (i, row) in rows.chunks(width).enumerate() {
            assert_eq!(m.predict_row(row), want[i], "row {i}");
        }
    }

    /// A random tree of at most `max_depth` levels, as xgboost lays trees
    /// out (node ids in creation order), with thresholds and leaf values
    /// drawn from `values`.
    fn random_tree(rng: &mut Lcg, width: usize, max_depth: usize, values: &[f32]) -> Value {
        let (mut left, mut right, mut feature, mut cond, mut dl) = (
            vec![-1i64],
            vec![-1i64],
            vec![0i64],
            vec![0.0f32],
            vec![0u8],
        );
        let mut open = vec![(0usize, 0usize)];
        while let Some((id, depth)) = open.pop() {
            let pick = values[rng.next() as usize % values.len()];
            if depth == max_depth || rng.next().is_multiple_of(4) {
                cond[id] = pick;
                continue;
            }
            feature[id] = (rng.next() as usize % width) as i64;
            cond[id] = pick;
            dl[id] = (rng.next() % 2) as u8;
            let first = cond.len();
            left[id] = first as i64;
            right[id] = first as i64 + 1;
            for child in [first, first + 1] {
                open.push((child, depth + 1));
                left.push(-1);
                right.push(-1);
                feature.push(0);
                cond.push(0.0);
                dl.push(0);
            }
        }
        let mut t = tree(&left, &right, &feature, &cond, &dl);
        t["tree_param"]["num_feature"] = json!(width.to_string());
        t
    }

    /// XGBoost's rule, straight from the document: left iff `x < condition`,
    /// missing values by `default_left`, leaves summed in tree order.
    fn reference_margin(doc: &Value, row: &[f32]) -> f32 {
        let trees = doc["learner"]["gradient_booster"]["model"]["trees"]
            .as_array()
            .unwrap();
        let mut margin = 0.0f32;
        for t in trees {
            let get = |key: &str, i: usize| t[key][i].as_f64().unwrap();
            let mut node = 0;
            while get("left_children", node) >= 0.0 {
                let x = row[get("split_indices", node) as usize];
                let go_left = if x.is_nan() {
                    get("default_left", node) != 0.0
                } else {
                    x < get("split_conditions", node) as f32
                };
                let child = if go_left {
                    "left_children"
                } else {
                    "right_children"
                };
                node = get(child, node) as usize;
            }
            margin += get("split_conditions", node) as f32;
        }
        margin
    }

    #[test]
    fn random_models_match_the_reference_rule() {
        let values = [
            0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 1e-40, -1e-40, 3.4e38, -3.4e38, 1e-7, 100.0,
        ];
        let inputs = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            0.49999997,
            -2.5,
            1e-40,
            -1e-40,
            f32::MIN_POSITIVE,
            3.4e38,
            -3.4e38,
            7.0,
        ];
        let mut rng = Lcg(2024);
        let shapes = [(1, 1), (2, 2), (3, 3), (9, 6), (40, 10), (5000, 5), (7, 13)];
        for (width, depth) in shapes {
            let n_trees = 1 + (rng.next() % 40) as usize;
            let trees: Vec<Value> = (0..n_trees)
                .map(|_| random_tree(&mut rng, width, depth, &values))
                .collect();
            let mut doc = model("reg:squarederror", "0E0", trees);
            doc["learner"]["learner_model_param"]["num_feature"] = json!(width.to_string());
            doc["learner"]["feature_names"] = json!([]);
            let m = load(&doc).unwrap();
            let n_rows = 77;
            let rows: Vec<f32> = (0..n_rows * width)
                .map(|_| inputs[rng.next() as usize % inputs.len()])
                .collect();
            let mut batch = vec![0.0; n_rows];
            m.predict_batch(&rows, &mut batch);
            for (i, row) in rows.chunks(width).enumerate() {
                let want = reference_margin(&doc, row);
                let single = m.predict_row(row);
                assert_eq!(single.to_bits(), want.to_bits(), "width {width} row {i}");
                assert_eq!(batch[i].to_bits(), want.to_bits(), "width {width} row {i}");
            }
        }
    }

    #[test]
    fn logistic_objectives_start_from_the_logit_of_base_score() {
        for objective in ["binary:logistic", "reg:logistic"] {
            for base in ["2.5E-1", "[2.5E-1]", " [ 2.5E-1 ] "] {
                let m = load(&model(objective, base, vec![leaf(0.0)])).unwrap();
                let p = m.predict_row(&[0.0, 0.0]);
                assert!((p - 0.25).abs() < 1e-6, "{objective} {base}: {p}");
            }
            let m = load(&model(objective, "5E-1", vec![leaf(1.0), leaf(-3.0)])).unwrap();
            let want = 1.0 / (1.0 + 2.0f32.exp());
            assert!((m.predict_row(&[0.0, 0.0]) - want).abs() < 1e-7);
        }
        let m = load(&model("reg:squarederror", "[1.5E0]", vec![leaf(0.25)])).unwrap();
        assert_eq!(m.predict_row(&[0.0, 0.0]), 1.75);
        assert_eq!(m.objective().name(), "reg:squarederror");
    }

    #[test]
    fn older_encodings_are_accepted() {
        // xgboost 1.x: scalar base_score, no num_target, no split_type or
        // categories, and booleans or numbers where 3.x writes strings.
        let mut doc = model("reg:linear", "5E-1", vec![stump(1)]);
        let learner = &mut doc["learner"];
        learner["learner_model_param"] =
            json!({"base_score": 0.5, "num_class": 0, "num_feature": "2"});
        learner.as_object_mut().unwrap().remove("feature_names");
        let gbtree = &mut learner["gradient_booster"]["model"];
        gbtree.as_object_mut().unwrap().remove("cats");
        let tree = gbtree["trees"][0].as_object_mut().unwrap();
        for key in ["split_type", "categories", "categories_nodes"] {
            tree.remove(key);
        }
        tree.insert("default_left".into(), json!([true, false, false]));
        let m = load(&doc).unwrap();
        assert_eq!(m.objective(), Objective::RegSquaredError);
        assert!(m.feature_names().is_empty());
        assert_eq!(m.predict_row(&[f32::NAN, 0.0]), -0.5);
    }

    #[test]
    fn batch_matches_single_rows() {
        let mut trees = Vec::new();
        for i in 0..7 {
            let s = i as f32 / 7.0;
            trees.push(tree(
                &[1, 3, 5, -1, -1, -1, -1],
                &[2, 4, 6, -1, -1, -1, -1],
                &[i % 2, 1, 0, 0, 0, 0, 0],
                &[s, 0.3, 0.6, 0.1 * s, -0.2, 0.3 + s, -0.4],
                &[(i % 2) as u8, 0, 1, 0, 0, 0, 0],
            ));
            trees.push(if i % 3 == 0 { leaf(0.01 * s) } else { stump(1) });
        }
        let m = load(&model("binary:logistic", "[3E-1]", trees)).unwrap();
        let mut rng = Lcg(7);
        let rows: Vec<f32> = (0..2 * 203)
            .map(|_| match rng.next() % 10 {
                0 => f32::NAN,
                r => r as f32 / 10.0 - 0.05 * (rng.next() % 3) as f32,
            })
            .collect();
        let singles: Vec<f32> = rows.chunks(2).map(|r| m.predict_row(r)).collect();
        for batch in [1, 2, 7, 8, 9, 64, 65, 130, 203] {
            let mut out = vec![0.0; 203];
            for (r, o) in rows.chunks(batch * 2).zip(out.chunks_mut(batch)) {
                m.predict_batch(r, o);
            }
            let same = out
                .iter()
                .zip(&singles)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "batch of {batch}");
        }
        m.predict_batch(&[], &mut []);
    }

    #[test]
    fn featureless_models_score_their_leaves() {
        let featureless = |mut t: Value| {
            t["tree_param"]["num_feature"] = json!("0");
            t
        };
        let trees = vec![featureless(leaf(0.25)), featureless(leaf(0.5))];
        let mut doc = model("reg:squarederror", "1E0", trees);
        doc["learner"]["learner_model_param"]["num_feature"] = json!("0");
        doc["learner"]["feature_names"] = json!([]);
        let m = load(&doc).unwrap();
        assert_eq!(m.predict_row(&[]), 1.75);
        let mut out = [0.0; 3];
        m.predict_batch(&[], &mut out);
        assert_eq!(out, [1.75; 3]);
        doc["learner"]["gradient_booster"]["model"]["trees"][0] = featureless(stump(0));
        let err = load_err(&doc);
        assert!(err.contains("feature 0, but the model has 0"), "{err}");
    }

    #[test]
    #[should_panic(expected = "row has 3 values")]
    fn predict_row_checks_the_row_length() {
        let m = load(&model("binary:logistic", "5E-1", vec![stump(0)])).unwrap();
        m.predict_row(&[0.0, 0.0, 0.0]);
    }

    #[test]
    #[should_panic(expected = "values given for")]
    fn predict_batch_checks_the_lengths() {
        let m = load(&model("binary:logistic", "5E-1", vec![stump(0)])).unwrap();
        m.predict_batch(&[0.0; 5], &mut [0.0; 2]);
    }

    #[test]
    fn model_is_shareable_and_debug_is_short() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<XgbModel>();
        let m = load(&model("binary:logistic", "5E-1", vec![stump(0); 50])).unwrap();
        let debug = format!("{m:?}");
        assert!(debug.contains("num_trees: 50"), "{debug}");
        assert!(debug.contains("compact"), "{debug}");
        assert!(debug.len() < 200, "{debug}");
    }

    #[test]
    fn formats_are_told_apart_by_their_bytes() {
        let doc = model("binary:logistic", "[3E-1]", vec![stump(1), leaf(0.5)]);
        let json = serde_json::to_vec_pretty(&doc).unwrap();
        let reference = XgbModel::from_bytes(&json).unwrap();
        let row = [f32::NAN, 1.0];
        let want = reference.predict_row(&row);

        let mut padded = b"\xef\xbb\xbf \n\t".to_vec();
        padded.extend_from_slice(&json);
        let ubj = to_ubjson(&doc);
        assert_eq!(ubj[0], b'{');
        let variants: Vec<(&str, Vec<u8>)> = vec![
            ("json with BOM and whitespace", padded),
            ("ubjson", ubj.clone()),
            (
                "tar xgboost-model ubjson",
                targz(&[("xgboost-model", &ubj)]),
            ),
            (
                "tar xgboost-model json among others",
                targz(&[
                    ("code/inference.py", b"print()"),
                    ("./xgboost-model", &json),
                ]),
            ),
            (
                "tar single json",
                targz(&[("model/model.json", &json), ("README", b"x")]),
            ),
            (
                "tar single ubj",
                targz(&[("._m.ubj", b"junk"), ("m.ubj", &ubj)]),
            ),
            ("gzipped json", gzip(&json)),
        ];
        for (what, bytes) in variants {
            let m = XgbModel::from_bytes(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(m.predict_row(&row).to_bits(), want.to_bits(), "{what}");
        }

        let ambiguous = targz(&[("a.json", &json), ("b.ubj", &ubj)]);
        let err = XgbModel::from_bytes(&ambiguous).unwrap_err().to_string();
        assert!(err.contains("`a.json`") && err.contains("`b.ubj`"), "{err}");
        let none = targz(&[("weights.bin", b"0000")]);
        let err = XgbModel::from_bytes(&none).unwrap_err().to_string();
        assert!(
            err.contains("xgboost-model") && err.contains("`weights.bin`"),
            "{err}"
        );
        let nested = targz(&[("xgboost-model", &gzip(&json))]);
        assert!(matches!(
            XgbModel::from_bytes(&nested),
            Err(LoadError::Archive(_))
        ));
        let legacy_in_tar = targz(&[("xgboost-model", b"binf\0\0\0\x3f\x09\0\0\0")]);
        let err = XgbModel::from_bytes(&legacy_in_tar)
            .unwrap_err()
            .to_string();
        assert!(err.contains("save_model"), "{err}");
        let corrupt_gzip = &targz(&[("xgboost-model", &json)])[..40];
        assert!(XgbModel::from_bytes(corrupt_gzip).is_err());
    }

    #[test]
    fn legacy_binary_pickle_and_garbage_are_refused_with_advice() {
        let legacy: &[u8] = b"\0\0\0\x3f\x09\0\0\0\0\0\0\0\x01\0\0\0";
        for bytes in [legacy, b"binf\0\0\0\x3f", b"hello", b"[1, 2]"] {
            let err = XgbModel::from_bytes(bytes).unwrap_err();
            assert!(matches!(err, LoadError::Format(_)), "{err:?}");
            let message = err.to_string();
            assert!(message.contains("legacy binary"), "{message}");
            assert!(message.contains("save_model(\"model.json\")"), "{message}");
        }
        let err = XgbModel::from_bytes(b"\x80\x04\x95\x10\0\0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pickle"), "{err}");
        let err = XgbModel::from_bytes(b"").unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn unsupported_models_say_why() {
        let base = model("binary:logistic", "5E-1", vec![stump(0)]);
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut doc = base.clone();
            edit(&mut doc);
            doc
        };
        let cases: Vec<(Value, &str)> = vec![
            (
                with(&|d| {
                    d["learner"]["gradient_booster"] =
                        json!({"name": "dart", "gbtree": {}, "weight_drop": [1.0]})
                }),
                "booster=\"gbtree\"",
            ),
            (
                with(&|d| {
                    d["learner"]["gradient_booster"] =
                        json!({"name": "gblinear", "model": {"weights": [0.1, 0.2, 0.3]}})
                }),
                "gblinear",
            ),
            (
                with(&|d| d["learner"]["objective"]["name"] = json!("reg:gamma")),
                "binary:logistic, reg:logistic, reg:squarederror",
            ),
            (
                with(&|d| d["learner"]["objective"]["name"] = json!("multi:softprob")),
                "multi-class",
            ),
            (
                with(&|d| d["learner"]["learner_model_param"]["num_class"] = json!("3")),
                "multi-class",
            ),
            (
                with(&|d| d["learner"]["learner_model_param"]["num_target"] = json!("2")),
                "multi-target",
            ),
            (
                with(&|d| d["learner"]["learner_model_param"]["base_score"] = json!("[5E-1,5E-1]")),
                "intercepts",
            ),
            (
                with(&|d| d["learner"]["gradient_booster"]["model"]["tree_info"] = json!([1])),
                "multi-class",
            ),
            (
                with(&|d| {
                    d["learner"]["gradient_booster"]["model"]["trees"][0]["split_type"] =
                        json!([1, 0, 0])
                }),
                "categorical",
            ),
            (
                with(&|d| {
                    d["learner"]["gradient_booster"]["model"]["trees"][0]["categories_nodes"] =
                        json!([0])
                }),
                "categorical",
            ),
            (
                with(&|d| {
                    d["learner"]["gradient_booster"]["model"]["trees"][0]["tree_param"]["size_leaf_vector"] =
                        json!("3")
                }),
                "multi-target",
            ),
            (
                with(&|d| d["learner"]["feature_types"] = json!(["float", "c"])),
                "`f1` is categorical",
            ),
            (
                with(&|d| {
                    d["learner"]["gradient_booster"]["model"]["cats"]["enc"] = json!([{"x": 1}])
                }),
                "categorical",
            ),
        ];
        for (doc, word) in cases {
            let err = load(&doc).expect_err(word);
            assert!(matches!(err, LoadError::Unsupported(_)), "{err:?}");
            assert!(err.to_string().contains(word), "`{err}` lacks `{word}`");
        }
    }

    #[test]
    fn broken_trees_are_refused() {
        let with_tree = |t: Value| model("reg:squarederror", "5E-1", vec![t]);
        let f = [0.5, -1.0, 2.0];
        // A chain far deeper than MAX_DEPTH: node i splits into i+1 and a leaf.
        let deep = 300usize;
        let mut left = Vec::new();
        let mut right = Vec::new();
        for i in 0..deep {
            left.push(i as i64 + 1);
            right.push((deep + 1 + i) as i64);
        }
        left.extend(vec![-1; deep + 1]);
        right.extend(vec![-1; deep + 1]);
        let n = left.len();
        let deep_tree = tree(&left, &right, &vec![0; n], &vec![0.0; n], &vec![0; n]);
        let cases: Vec<(Value, &str)> = vec![
            (
                with_tree(tree(&[1, -1, -1], &[7, -1, -1], &[0; 3], &f, &[0; 3])),
                "outside",
            ),
            (
                with_tree(tree(&[1, -1, -1], &[-2, -1, -1], &[0; 3], &f, &[0; 3])),
                "outside",
            ),
            (
                with_tree(tree(&[1, 0, -1], &[2, 2, -1], &[0; 3], &f, &[0; 3])),
                "reached twice",
            ),
            (
                with_tree(tree(&[1, -1, -1], &[1, -1, -1], &[0; 3], &f, &[0; 3])),
                "reached twice",
            ),
            (
                with_tree(tree(&[1, -1, -1], &[2, -1, -1], &[2, 0, 0], &f, &[0; 3])),
                "feature 2",
            ),
            (
                with_tree(tree(&[1, -1, -1], &[2, -1, -1], &[-1, 0, 0], &f, &[0; 3])),
                "feature -1",
            ),
            (
                with_tree(tree(&[1, -1, -1], &[2, -1], &[0; 3], &f, &[0; 3])),
                "right_children",
            ),
            (
                with_tree(tree(&[1, -1, -1], &[2, -1, -1], &[0; 3], &f, &[0; 2])),
                "default_left",
            ),
            (with_tree(tree(&[], &[], &[], &[], &[])), "no nodes"),
            (with_tree(deep_tree), "deeper than 128"),
            (
                {
                    let mut d = with_tree(stump(0));
                    d["learner"]["gradient_booster"]["model"]["trees"][0]["tree_param"]["num_nodes"] =
                        json!("5");
                    d
                },
                "for 5 nodes",
            ),
            (
                {
                    let mut d = with_tree(stump(0));
                    d["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"] =
                        json!("2");
                    d
                },
                "num_trees",
            ),
            (
                {
                    let mut d = with_tree(stump(0));
                    d["learner"]["feature_names"] = json!(["only-one"]);
                    d
                },
                "feature names",
            ),
            (
                model("binary:logistic", "1E0", vec![stump(0)]),
                "between 0 and 1",
            ),
            (
                model("binary:logistic", "abc", vec![stump(0)]),
                "not a number",
            ),
        ];
        for (doc, word) in cases {
            let err = load(&doc).expect_err(word);
            assert!(matches!(err, LoadError::Invalid(_)), "{word}: {err:?}");
            assert!(err.to_string().contains(word), "`{err}` lacks `{word}`");
        }
    }

    #[test]
    fn wrong_types_are_parse_errors() {
        let base = model("reg:squarederror", "5E-1", vec![stump(0)]);
        let tree = "/learner/gradient_booster/model/trees/0";
        let edits = [
            (format!("{tree}/split_conditions"), json!([0.5, "NaN", 1.0])),
            (format!("{tree}/left_children"), json!([1.5, -1, -1])),
            (format!("{tree}/default_left"), json!([2, 0, 0])),
            (format!("{tree}/tree_param"), json!([])),
            (
                "/learner/gradient_booster/model/trees".into(),
                json!({"0": 1}),
            ),
            (
                "/learner/learner_model_param/num_feature".into(),
                json!(null),
            ),
            (
                "/learner/learner_model_param/num_feature".into(),
                json!("-3"),
            ),
            ("/learner/objective".into(), json!("binary:logistic")),
            ("/learner".into(), json!(null)),
        ];
        for (pointer, value) in edits {
            let mut doc = base.clone();
            *doc.pointer_mut(&pointer).unwrap() = value;
            let err = load(&doc).expect_err(&pointer);
            assert!(
                matches!(err, LoadError::Parse { .. } | LoadError::Invalid(_)),
                "{pointer}: {err:?}"
            );
        }
        let mut doc = base.clone();
        doc["learner"]["learner_model_param"]
            .as_object_mut()
            .unwrap()
            .remove("num_feature");
        assert!(load_err(&doc).contains("num_feature"));
    }

    #[test]
    fn non_finite_values_from_ubjson_are_refused() {
        let mut doc = model("reg:squarederror", "5E-1", vec![stump(0)]);
        // Placeholders that the UBJSON encoder writes as float32, patched to
        // NaN afterwards since JSON cannot carry NaN.
        doc["learner"]["gradient_booster"]["model"]["trees"][0]["split_conditions"] =
            json!([0.5, -1.0, 1234.5]);
        let mut ubj = to_ubjson(&doc);
        let marker = 1234.5f32.to_be_bytes();
        let at = ubj.windows(4).position(|w| w == marker).unwrap();
        ubj[at..at + 4].copy_from_slice(&f32::NAN.to_be_bytes());
        let err = XgbModel::from_bytes(&ubj).unwrap_err().to_string();
        assert!(err.contains("non-finite"), "{err}");
    }

    #[test]
    fn huge_ubjson_counts_are_refused_before_allocating() {
        let doc = model("reg:squarederror", "5E-1", vec![stump(0)]);
        let ubj = to_ubjson(&doc);
        // The count of the first typed int32 array (left_children or
        // default_left) is rewritten to 2^40 elements.
        let at = ubj.windows(4).position(|w| w == b"[$l#").unwrap();
        let mut forged = ubj.clone();
        forged[at + 5..at + 13].copy_from_slice(&(1i64 << 40).to_be_bytes());
        let err = XgbModel::from_bytes(&forged).unwrap_err().to_string();
        assert!(err.contains("exceeds"), "{err}");
        forged[at + 5..at + 13].copy_from_slice(&(-1i64).to_be_bytes());
        assert!(XgbModel::from_bytes(&forged).is_err());
    }

    /// Whatever the bytes, loading returns an error or a model that scores
    /// without panicking.
    fn load_never_panics(bytes: &[u8]) {
        if let Ok(m) = XgbModel::from_bytes(bytes) {
            let row = vec![0.25; m.num_features()];
            let _ = m.predict_row(&row);
            let nan = vec![f32::NAN; m.num_features()];
            let _ = m.predict_row(&nan);
            let rows = vec![-0.5; 9 * m.num_features()];
            m.predict_batch(&rows, &mut [0.0; 9]);
        }
    }

    #[test]
    fn truncated_and_corrupted_input_never_panics() {
        let doc = model(
            "binary:logistic",
            "[3E-1]",
            vec![stump(1), leaf(0.5), stump(0)],
        );
        let json = serde_json::to_vec(&doc).unwrap();
        let ubj = to_ubjson(&doc);
        let tgz = targz(&[("xgboost-model", &ubj)]);
        for bytes in [&json, &ubj] {
            for len in 0..bytes.len() {
                let cut = &bytes[..len];
                assert!(XgbModel::from_bytes(cut).is_err(), "prefix of {len} bytes");
            }
        }
        // An archive cut after its model member still yields that (complete)
        // model; any shorter cut must fail.
        for len in 0..tgz.len() {
            load_never_panics(&tgz[..len]);
        }
        assert!(XgbModel::from_bytes(&tgz[..tgz.len() / 2]).is_err());
        let mut rng = Lcg(42);
        for round in 0..3000 {
            let mut bytes = if round % 2 == 0 {
                ubj.clone()
            } else {
                json.clone()
            };
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() as usize) % bytes.len();
                bytes[at] = rng.next() as u8;
            }
            load_never_panics(&bytes);
        }
    }
}
