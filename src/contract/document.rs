//! The property document: how a worker is pointed at it, and TEN's two layouts of
//! `predefined_graphs`, in which the catalog reads graphs, the supervisor writes the per-worker
//! copy, and the worker reads it back.

use serde_json::Value;

/// The flag that precedes the path of the property document on a worker's command line
/// (`agentd worker --property FILE`, or any `runtime.command` followed by it).
pub const PROPERTY_FLAG: &str = "--property";

/// The key, inside a layout's section, of the list of graphs.
pub const PREDEFINED_GRAPHS: &str = "predefined_graphs";

/// The deepest nesting of objects and arrays a property document may have (see [`depth`]):
/// `/start` refuses to write a deeper one and the worker refuses to read one. Well below
/// serde_json's own limit of 128, so every document the worker could be given parses.
pub const MAX_DEPTH: usize = 64;

/// How deeply objects and arrays nest in `v`: 0 for a scalar, 1 for `{}` or `[1]`, 2 for
/// `{"a": {}}`.
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Which TEN layout a graph is written in; the per-worker copy keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Old layout: `_ten.predefined_graphs[]` with `nodes`/`connections` on the graph.
    Legacy,
    /// New layout: `ten.predefined_graphs[]` with `graph.{nodes,connections}`.
    Current,
}

impl Layout {
    /// Both layouts, in the order a document is searched.
    pub const ALL: [Layout; 2] = [Layout::Legacy, Layout::Current];

    /// The top-level section name of this layout.
    pub fn section(self) -> &'static str {
        match self {
            Layout::Legacy => "_ten",
            Layout::Current => "ten",
        }
    }

    /// The `nodes` array of a graph object written in this layout.
    pub fn nodes(self, graph: &Value) -> Option<&Vec<Value>> {
        match self {
            Layout::Legacy => graph.get("nodes"),
            Layout::Current => graph.get("graph").and_then(|g| g.get("nodes")),
        }
        .and_then(Value::as_array)
    }

    /// The `nodes` array of a graph object written in this layout, to edit.
    pub fn nodes_mut(self, graph: &mut Value) -> Option<&mut Vec<Value>> {
        match self {
            Layout::Legacy => graph.get_mut("nodes"),
            Layout::Current => graph.get_mut("graph")?.get_mut("nodes"),
        }?
        .as_array_mut()
    }

    /// The graphs a document lists in this layout's section, when it has that list.
    pub fn graphs(self, doc: &Value) -> Option<&Vec<Value>> {
        doc.get(self.section())?.get(PREDEFINED_GRAPHS)?.as_array()
    }

    /// The [`depth`] at which a node's `property` object sits in a document of this layout
    /// (document, section, graph list, graph, [`graph`,] node list, node, property).
    pub fn property_depth(self) -> usize {
        match self {
            Layout::Legacy => 7,
            Layout::Current => 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nodes_by_layout() {
        let old = json!({"nodes": [{"name": "a"}]});
        let new = json!({"graph": {"nodes": [{"name": "b"}]}});
        assert_eq!(Layout::Legacy.nodes(&old).map(Vec::len), Some(1));
        assert!(Layout::Current.nodes(&old).is_none());
        assert_eq!(Layout::Current.nodes(&new).map(Vec::len), Some(1));
        let doc = json!({"ten": {"predefined_graphs": [new]}});
        assert_eq!(Layout::Current.graphs(&doc).map(Vec::len), Some(1));
        assert!(Layout::Legacy.graphs(&doc).is_none());
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!([])), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": {}}], "c": 2})), 4);
        for layout in Layout::ALL {
            let mut graph = json!({"name": "g"});
            let nodes = json!([{"name": "n", "property": {}}]);
            match layout {
                Layout::Legacy => graph["nodes"] = nodes,
                Layout::Current => graph["graph"] = json!({ "nodes": nodes }),
            }
            let doc = json!({ layout.section(): { PREDEFINED_GRAPHS: [graph] } });
            assert_eq!(depth(&doc), layout.property_depth(), "{layout:?}");
        }
    }
}
