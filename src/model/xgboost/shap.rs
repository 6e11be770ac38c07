//! Exact Shapley values of a row's margin (TreeSHAP, Lundberg et al. 2020, Algorithm 2):
//! one contribution per feature and the bias (the expected margin, each tree's leaves weighted
//! by their training cover, `sum_hessian`), so that contributions + bias = the margin. The
//! arithmetic follows XGBoost's `pred_contribs` (a split sends a value below its condition
//! left, a missing one its default way), in `f64`.
//!
//! Each tree keeps its nodes in XGBoost's own numbering with the cover of every node; the walk
//! is the polynomial-time recursion over the unique features of the path.

/// One node, in the tree's own numbering.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// `u32::MAX` for a leaf.
    left: u32,
    right: u32,
    feature: u32,
    /// The split condition, or a leaf's value.
    value: f32,
    default_left: bool,
    cover: f64,
}

impl Node {
    fn is_leaf(&self) -> bool {
        self.left == u32::MAX
    }
}

/// The trees with what TreeSHAP needs, and each tree's expected value.
#[derive(Debug)]
pub struct Explainer {
    trees: Vec<Vec<Node>>,
    /// The intercept plus every tree's cover-weighted mean leaf value.
    bias: f64,
    num_features: usize,
}

/// A tree as the loader read it (already checked: children in range, no cycles).
pub(super) struct TreeParts<'a> {
    pub(super) left: &'a [i64],
    pub(super) right: &'a [i64],
    pub(super) features: &'a [i64],
    pub(super) values: &'a [f32],
    pub(super) default_left: &'a [bool],
    pub(super) covers: &'a [f32],
}

/// One element of the path from the root: a feature, the fraction of training rows that
/// follow the path where it splits (`zero`), whether the explained row does (`one`), and the
/// weight of the subsets of the path's features of each size.
#[derive(Clone, Copy, Debug, Default)]
struct PathElement {
    feature: i64,
    zero: f64,
    one: f64,
    weight: f64,
}

impl Explainer {
    /// The explainer of trees read with their covers; why not, when a tree has none (a model
    /// saved without `sum_hessian`) or a cover that is not positive.
    pub(super) fn new(
        trees: &[TreeParts<'_>],
        base_margin: f32,
        num_features: usize,
    ) -> Result<Self, String> {
        let mut built = Vec::with_capacity(trees.len());
        let mut bias = f64::from(base_margin);
        for (index, tree) in trees.iter().enumerate() {
            let n = tree.left.len();
            if tree.covers.len() != n {
                return Err(format!(
                    "tree {index} has {} node covers (`sum_hessian`) for {n} nodes",
                    tree.covers.len()
                ));
            }
            let mut nodes = Vec::with_capacity(n);
            for id in 0..n {
                let cover = f64::from(tree.covers[id]);
                if !(cover > 0.0 && cover.is_finite()) {
                    return Err(format!("tree {index} node {id} has the cover {cover}"));
                }
                let leaf = tree.left[id] < 0;
                nodes.push(Node {
                    left: if leaf { u32::MAX } else { tree.left[id] as u32 },
                    right: if leaf {
                        u32::MAX
                    } else {
                        tree.right[id] as u32
                    },
                    feature: if leaf { 0 } else { tree.features[id] as u32 },
                    value: tree.values[id],
                    default_left: tree.default_left[id],
                    cover,
                });
            }
            bias += mean_value(&nodes, 0);
            built.push(nodes);
        }
        Ok(Self {
            trees: built,
            bias,
            num_features,
        })
    }

    /// The expected margin (the bias every explanation starts from).
    pub fn bias(&self) -> f64 {
        self.bias
    }

    /// Each feature's contribution to the margin of `row` (`NaN`: missing), added into
    /// `contributions` (one per feature).
    pub fn contributions(&self, row: &[f32], contributions: &mut [f64]) {
        assert_eq!(row.len(), self.num_features);
        assert_eq!(contributions.len(), self.num_features);
        // Depth + 1 elements per level of recursion, at most as many levels as the depth.
        let mut path = Vec::new();
        for tree in &self.trees {
            path.clear();
            recurse(tree, 0, row, contributions, &mut path, 0, 1.0, 1.0, -1);
        }
    }
}

/// The cover-weighted mean of the leaf values below `node`.
fn mean_value(nodes: &[Node], node: usize) -> f64 {
    let here = nodes[node];
    if here.is_leaf() {
        return f64::from(here.value);
    }
    let (left, right) = (here.left as usize, here.right as usize);
    (mean_value(nodes, left) * nodes[left].cover + mean_value(nodes, right) * nodes[right].cover)
        / here.cover
}

/// `1 / k` for every `k` a path of the deepest tree the loader accepts needs: the recursion
/// multiplies by these instead of dividing (divisions were most of its time).
const INV: [f64; 132] = {
    let mut table = [0.0; 132];
    let mut k = 1;
    while k < table.len() {
        table[k] = 1.0 / k as f64;
        k += 1;
    }
    table
};

/// Extends the path (its `depth + 1` elements) by one split.
fn extend(path: &mut [PathElement], depth: usize, zero: f64, one: f64, feature: i64) {
    path[depth] = PathElement {
        feature,
        zero,
        one,
        weight: if depth == 0 { 1.0 } else { 0.0 },
    };
    let inv = INV[depth + 1];
    for i in (0..depth).rev() {
        let w = path[i].weight;
        path[i + 1].weight += one * w * (i + 1) as f64 * inv;
        path[i].weight = zero * w * (depth - i) as f64 * inv;
    }
}

/// Undoes the extension by `path[index]`.
fn unwind(path: &mut [PathElement], depth: usize, index: usize) {
    let PathElement { zero, one, .. } = path[index];
    let scale = (depth + 1) as f64;
    let mut next_one = path[depth].weight;
    if one != 0.0 {
        let inv_one = 1.0 / one;
        for i in (0..depth).rev() {
            let w = path[i].weight;
            path[i].weight = next_one * scale * INV[i + 1] * inv_one;
            next_one = w - path[i].weight * zero * (depth - i) as f64 * INV[depth + 1];
        }
    } else {
        let inv_zero = 1.0 / zero;
        for i in (0..depth).rev() {
            path[i].weight *= scale * inv_zero * INV[depth - i];
        }
    }
    for i in index..depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero = path[i + 1].zero;
        path[i].one = path[i + 1].one;
    }
}

/// The total weight of the path with `path[index]` unwound, without changing it.
fn unwound_sum(path: &[PathElement], depth: usize, index: usize) -> f64 {
    let PathElement { zero, one, .. } = path[index];
    let scale = (depth + 1) as f64;
    let mut total = 0.0;
    if one != 0.0 {
        let inv_one = 1.0 / one;
        let mut next_one = path[depth].weight;
        for i in (0..depth).rev() {
            let w = next_one * scale * INV[i + 1] * inv_one;
            total += w;
            next_one = path[i].weight - w * zero * (depth - i) as f64 * INV[depth + 1];
        }
    } else {
        let inv_zero = 1.0 / zero;
        for i in (0..depth).rev() {
            total += path[i].weight * inv_zero * scale * INV[depth - i];
        }
    }
    total
}

/// Walks `node` with the path so far in `path` (`depth` unique features), the fractions of
/// the split that led here, and its feature (-1 at the root).
#[allow(clippy::too_many_arguments)]
fn recurse(
    nodes: &[Node],
    node: usize,
    row: &[f32],
    phi: &mut [f64],
    path: &mut Vec<PathElement>,
    depth: usize,
    zero: f64,
    one: f64,
    feature: i64,
) {
    // Each level works on its own copy of the path: the parent's stays as it was.
    let start = path.len();
    if depth > 0 {
        let parent = start - depth;
        path.extend_from_within(parent..start);
    }
    path.push(PathElement::default());
    let here = &mut path[start..];
    extend(here, depth, zero, one, feature);
    let mut depth = depth;
    let this = nodes[node];
    if this.is_leaf() {
        for i in 1..=depth {
            let w = unwound_sum(here, depth, i);
            let element = here[i];
            phi[element.feature as usize] +=
                w * (element.one - element.zero) * f64::from(this.value);
        }
    } else {
        let x = row[this.feature as usize];
        let goes_left = if x.is_nan() {
            this.default_left
        } else {
            x < this.value
        };
        let (hot, cold) = if goes_left {
            (this.left as usize, this.right as usize)
        } else {
            (this.right as usize, this.left as usize)
        };
        let hot_zero = nodes[hot].cover / this.cover;
        let cold_zero = nodes[cold].cover / this.cover;
        let (mut incoming_zero, mut incoming_one) = (1.0, 1.0);
        let split = i64::from(this.feature);
        if let Some(k) = (1..=depth).find(|&k| here[k].feature == split) {
            incoming_zero = here[k].zero;
            incoming_one = here[k].one;
            unwind(here, depth, k);
            depth -= 1;
        }
        // The children see this level's path: `depth + 1` elements from `start`.
        path.truncate(start + depth + 1);
        recurse(
            nodes,
            hot,
            row,
            phi,
            path,
            depth + 1,
            hot_zero * incoming_zero,
            incoming_one,
            split,
        );
        path.truncate(start + depth + 1);
        recurse(
            nodes,
            cold,
            row,
            phi,
            path,
            depth + 1,
            cold_zero * incoming_zero,
            0.0,
            split,
        );
    }
    path.truncate(start);
}
