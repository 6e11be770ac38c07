//! The flattened forest and its walk, from rows of values to margins.
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

/// Trees walked together for a single row.
const TREE_LANES: usize = 12;
/// Rows walked together through one tree in a batch.
const ROW_LANES: usize = 8;
/// Rows scored tree by tree as one block in a batch: enough to reuse each
/// tree's nodes while they are in cache, few enough for the rows to stay in
/// cache too.
const BLOCK_ROWS: usize = 64;

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
pub(super) struct FlatNode {
    pub(super) feature: u32,
    pub(super) threshold: u32,
    pub(super) offset: u32,
    /// The leaf's value (unused in internal nodes).
    pub(super) value: f32,
}

const LEAF_THRESHOLD: u32 = u32::MAX;

impl FlatNode {
    pub(super) fn leaf(value: f32) -> Self {
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
pub(super) trait Layout: Copy + fmt::Debug + Send + Sync + 'static {
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
pub(super) struct Compact {
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
pub(super) struct Wide {
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
pub(super) fn key(x: f32) -> u32 {
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
pub(super) struct Forest<L> {
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
pub(super) enum Trees {
    Compact(Forest<Compact>),
    Wide(Forest<Wide>),
}

impl Trees {
    pub(super) fn build(
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

    pub(super) fn row_margin(&self, base: f32, row: &[f32]) -> f32 {
        match self {
            Trees::Compact(forest) => forest.row_margin(base, row),
            Trees::Wide(forest) => forest.row_margin(base, row),
        }
    }

    pub(super) fn batch(
        &self,
        base: f32,
        rows: &[f32],
        out: &mut [f32],
        transform: impl Fn(f32) -> f32,
    ) {
        match self {
            Trees::Compact(forest) => forest.batch(base, rows, out, transform),
            Trees::Wide(forest) => forest.batch(base, rows, out, transform),
        }
    }

    /// Trees in the forest.
    pub(super) fn num_trees(&self) -> usize {
        match self {
            Trees::Compact(forest) => forest.roots.len(),
            Trees::Wide(forest) => forest.roots.len(),
        }
    }

    /// Trees, nodes, deepest tree and layout, for `Debug`.
    pub(super) fn summary(&self) -> (usize, usize, u32, &'static str) {
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
