//! The node DAG: topological order, parallel layers, cycles and upstream sets.

use std::collections::{BTreeSet, HashMap};

/// The dependency graph of a pipeline's nodes, by index in file order.
#[derive(Clone, Debug)]
pub struct Graph {
    ids: Vec<String>,
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
}

impl Graph {
    /// Builds the graph from `(id, needs)` pairs. Unknown needs and repeated ids
    /// are ignored here (validation reports them); the first of a repeated id wins.
    pub fn new<'a, I, N>(nodes: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, N)>,
        N: IntoIterator<Item = &'a str>,
    {
        let nodes: Vec<(&str, Vec<&str>)> = nodes
            .into_iter()
            .map(|(id, needs)| (id, needs.into_iter().collect()))
            .collect();
        let mut index = HashMap::with_capacity(nodes.len());
        for (i, (id, _)) in nodes.iter().enumerate() {
            index.entry(*id).or_insert(i);
        }
        let mut deps = vec![Vec::new(); nodes.len()];
        let mut dependents = vec![Vec::new(); nodes.len()];
        for (i, (_, needs)) in nodes.iter().enumerate() {
            for need in needs {
                if let Some(&j) = index.get(need)
                    && !deps[i].contains(&j)
                {
                    deps[i].push(j);
                    dependents[j].push(i);
                }
            }
        }
        Self {
            ids: nodes.iter().map(|(id, _)| (*id).to_owned()).collect(),
            deps,
            dependents,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The id of node `i`.
    pub fn id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    /// Direct dependencies of node `i`.
    pub fn deps(&self, i: usize) -> &[usize] {
        &self.deps[i]
    }

    /// Nodes that directly depend on node `i`.
    pub fn dependents(&self, i: usize) -> &[usize] {
        &self.dependents[i]
    }

    /// A topological order, ties broken by file order; `Err` with a cycle path.
    pub fn topo_order(&self) -> Result<Vec<usize>, Vec<String>> {
        let mut remaining: Vec<usize> = self.deps.iter().map(Vec::len).collect();
        let mut ready: BTreeSet<usize> = (0..self.len()).filter(|&i| remaining[i] == 0).collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &d in &self.dependents[i] {
                remaining[d] -= 1;
                if remaining[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        if order.len() == self.len() {
            Ok(order)
        } else {
            Err(self.find_cycle().unwrap_or_default())
        }
    }

    /// Nodes grouped into layers that can run in parallel: layer k holds the
    /// nodes whose longest dependency chain has k links.
    pub fn layers(&self) -> Result<Vec<Vec<usize>>, Vec<String>> {
        let order = self.topo_order()?;
        let mut depth = vec![0usize; self.len()];
        let mut layers: Vec<Vec<usize>> = Vec::new();
        for &i in &order {
            let d = self.deps[i]
                .iter()
                .map(|&j| depth[j] + 1)
                .max()
                .unwrap_or(0);
            depth[i] = d;
            if layers.len() <= d {
                layers.resize_with(d + 1, Vec::new);
            }
            layers[d].push(i);
        }
        for layer in &mut layers {
            layer.sort_unstable();
        }
        Ok(layers)
    }

    /// One cycle as a path of ids that starts and ends at the same node, e.g.
    /// `["a", "b", "c", "a"]`, or `None` when the graph is acyclic.
    pub fn find_cycle(&self) -> Option<Vec<String>> {
        // Iterative DFS (deep pipelines must not overflow the stack).
        const WHITE: u8 = 0;
        const GREY: u8 = 1;
        const BLACK: u8 = 2;
        let mut colour = vec![WHITE; self.len()];
        for start in 0..self.len() {
            if colour[start] != WHITE {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            colour[start] = GREY;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if let Some(&dep) = self.deps[node].get(*next) {
                    *next += 1;
                    match colour[dep] {
                        WHITE => {
                            colour[dep] = GREY;
                            stack.push((dep, 0));
                        }
                        GREY => {
                            // `dep` is on the stack: the cycle runs from it to `node`.
                            let from = stack.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                            // Edges point from a node to what it needs; print in flow order.
                            let mut path: Vec<String> = stack[from..]
                                .iter()
                                .rev()
                                .map(|&(n, _)| self.ids[n].clone())
                                .collect();
                            path.push(self.ids[node].clone());
                            return Some(path);
                        }
                        _ => {}
                    }
                } else {
                    colour[node] = BLACK;
                    stack.pop();
                }
            }
        }
        None
    }

    /// For every node, the set of nodes upstream of it (transitively needed).
    /// Call only on an acyclic graph; cycles yield partial sets.
    pub fn upstream_sets(&self) -> Vec<Upstream> {
        let words = self.len().div_ceil(64);
        let mut sets = vec![Upstream(vec![0u64; words]); self.len()];
        let order = self
            .topo_order()
            .unwrap_or_else(|_| (0..self.len()).collect());
        for &i in &order {
            let mut set = std::mem::take(&mut sets[i].0);
            for &d in &self.deps[i] {
                set[d / 64] |= 1 << (d % 64);
                for (w, x) in set.iter_mut().zip(&sets[d].0) {
                    *w |= *x;
                }
            }
            sets[i].0 = set;
        }
        sets
    }
}

/// A set of node indices upstream of some node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream(Vec<u64>);

impl Upstream {
    /// Whether node `i` is upstream.
    pub fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(spec: &[(&'static str, &[&'static str])]) -> Graph {
        Graph::new(spec.iter().map(|(id, needs)| (*id, needs.iter().copied())))
    }

    #[test]
    fn orders_and_layers_a_diamond() {
        let g = graph(&[("d", &["b", "c"]), ("b", &["a"]), ("c", &["a"]), ("a", &[])]);
        let order: Vec<&str> = g.topo_order().unwrap().iter().map(|&i| g.id(i)).collect();
        assert_eq!(order, ["a", "b", "c", "d"]);
        let layers: Vec<Vec<&str>> = g
            .layers()
            .unwrap()
            .iter()
            .map(|l| l.iter().map(|&i| g.id(i)).collect())
            .collect();
        assert_eq!(layers, vec![vec!["a"], vec!["b", "c"], vec!["d"]]);
    }

    #[test]
    fn reports_the_cycle_path() {
        let g = graph(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"]), ("x", &[])]);
        let cycle = g.topo_order().unwrap_err();
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4);
        let joined = cycle.join(" -> ");
        assert!(
            ["a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"].contains(&joined.as_str()),
            "{joined}"
        );
    }

    #[test]
    fn self_loop_is_a_cycle() {
        let g = graph(&[("a", &["a"])]);
        assert_eq!(g.find_cycle().unwrap(), vec!["a", "a"]);
    }

    #[test]
    fn upstream_is_transitive() {
        let g = graph(&[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &[])]);
        let up = g.upstream_sets();
        assert!(up[2].contains(0) && up[2].contains(1));
        assert!(!up[2].contains(3) && !up[0].contains(1));
    }
}
