//! Validation and flattening: a raw document checked and turned into a
//! forest, or refused with the reason.

use super::document::{RawDocument, RawTree, param_usize, parse_base_score};
use super::forest::{FlatNode, Trees, key};
use super::shap;
use super::{LoadError, Objective, XgbModel};

/// Nesting limit for trees: XGBoost's `max_depth` is rarely above 20, and a
/// crafted chain of nodes must not make a single walk arbitrarily long.
const MAX_DEPTH: usize = 128;
const MAX_TREES: usize = 1 << 20;
const MAX_NODES_PER_TREE: usize = 1 << 24;
const MAX_TOTAL_NODES: usize = 1 << 27;
/// Expanded rows hold up to `2 * ROW_LANES` keys per feature.
const MAX_FEATURES: usize = 1 << 24;

pub(super) fn build(raw: RawDocument) -> Result<XgbModel, LoadError> {
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
    let defaults: Vec<Vec<bool>> = trees
        .iter()
        .map(|t| t.default_left.iter().map(|f| f.0).collect())
        .collect();
    let parts: Vec<shap::TreeParts<'_>> = trees
        .iter()
        .zip(&defaults)
        .map(|(t, default_left)| shap::TreeParts {
            left: &t.left_children,
            right: &t.right_children,
            features: &t.split_indices,
            values: &t.split_conditions,
            default_left,
            covers: &t.sum_hessian,
        })
        .collect();
    let explainer = shap::Explainer::new(&parts, base_margin, num_features);
    let mut nodes = flat.nodes;
    // The padding leaf that `Forest::margin` walks in spare lanes.
    nodes.push(FlatNode::leaf(0.0));
    let trees = Trees::build(&nodes, roots, depths, num_features).ok_or_else(|| {
        LoadError::Invalid("the flattened trees failed their consistency check".into())
    })?;
    Ok(XgbModel {
        trees,
        explainer,
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
