//! The per-worker property document: one graph, `auto_start: true`, the request's `properties`
//! merge-patched per node (RFC 7396), and the start fields where TEN puts them.

use serde_json::{Map, Value};

use super::errors::StartError;
use super::StartSpec;
use crate::catalog::{Catalog, Graph, Layout};
use crate::contract::document::PREDEFINED_GRAPHS;

/// Builds the document for one worker of `graph`.
pub fn build(catalog: &Catalog, graph: &Graph, spec: &StartSpec) -> Result<Value, StartError> {
    let mut doc = catalog.worker_document(graph);
    let nodes = nodes_mut(&mut doc, graph.layout).ok_or_else(|| {
        StartError::BadParams(format!("graph {:?} has no nodes array", graph.name))
    })?;

    if let Some(props) = &spec.properties {
        let names: Vec<String> = nodes
            .iter()
            .filter_map(|n| n.get("name").and_then(Value::as_str).map(str::to_string))
            .collect();
        let unknown: Vec<String> = props
            .keys()
            .filter(|k| !names.contains(k))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(StartError::UnknownNodes {
                graph: graph.name.clone(),
                unknown,
                nodes: names,
            });
        }
        for (node, patch) in props {
            if !patch.is_object() {
                return Err(StartError::BadParams(format!(
                    "properties.{node} must be an object of property values"
                )));
            }
            if let Some(p) = property_of(nodes, node) {
                json_patch::merge(p, patch);
            }
        }
    }

    // TEN's startPropMap: only the fields the request carries.
    let channel = Value::String(spec.channel.clone());
    let mut set = |node: &str, key: &str, v: Value| {
        if let Some(Value::Object(p)) = property_of(nodes, node) {
            p.insert(key.to_string(), v);
        }
    };
    set("agora_rtc", "channel", channel.clone());
    set("agora_rtm", "channel", channel.clone());
    if let Some(uid) = spec.user_uid {
        set("agora_rtc", "remote_stream_id", uid.into());
    }
    if let Some(uid) = spec.bot_uid {
        set("agora_rtc", "stream_id", uid.into());
        set("agora_rtm", "user_id", uid.to_string().into());
    }
    if let Some(token) = &spec.token {
        set("agora_rtc", "token", token.clone().into());
        set("agora_rtm", "token", token.clone().into());
    }
    // Every node that has a channel property gets the channel.
    for n in nodes.iter_mut() {
        if let Some(Value::Object(p)) = n.get_mut("property") {
            if p.contains_key("channel") {
                p.insert("channel".into(), channel.clone());
            }
        }
    }
    Ok(doc)
}

/// The node properties of the (single) graph in a worker document.
pub fn node_properties(doc: &Value, layout: Layout) -> Vec<&Value> {
    named_properties(doc, layout)
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// `(node name, property)` of every node that has a property.
pub fn named_properties(doc: &Value, layout: Layout) -> Vec<(String, &Value)> {
    nodes(doc, layout)
        .iter()
        .filter_map(|n| Some((name_of(n), n.get("property")?)))
        .collect()
}

/// `(node name, addon, property)` of every node the built-in worker runs (`type` absent or
/// `extension`, as the worker reads them); `{}` for a node without a property.
pub fn extension_nodes(doc: &Value, layout: Layout) -> Vec<(String, String, Value)> {
    nodes(doc, layout)
        .iter()
        .filter(|n| n.get("type").and_then(Value::as_str).unwrap_or("extension") == "extension")
        .map(|n| {
            let addon = n.get("addon").and_then(Value::as_str).unwrap_or("");
            let property = n
                .get("property")
                .cloned()
                .unwrap_or_else(|| Value::Object(Map::new()));
            (name_of(n), addon.to_string(), property)
        })
        .collect()
}

fn nodes(doc: &Value, layout: Layout) -> &[Value] {
    layout
        .graphs(doc)
        .and_then(|g| g.first())
        .and_then(|g| layout.nodes(g))
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn name_of(node: &Value) -> String {
    node.get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn nodes_mut(doc: &mut Value, layout: Layout) -> Option<&mut Vec<Value>> {
    let g = doc
        .get_mut(layout.section())?
        .get_mut(PREDEFINED_GRAPHS)?
        .get_mut(0)?;
    layout.nodes_mut(g)
}

/// The `property` object of the node called `name`, created when the node has none.
fn property_of<'a>(nodes: &'a mut [Value], name: &str) -> Option<&'a mut Value> {
    let node = nodes
        .iter_mut()
        .find(|n| n.get("name").and_then(Value::as_str) == Some(name))?
        .as_object_mut()?;
    let p = node
        .entry("property")
        .or_insert_with(|| Value::Object(Map::new()));
    if !p.is_object() {
        *p = Value::Object(Map::new());
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Runtime;
    use serde_json::json;

    fn legacy(nodes: Value) -> Graph {
        Graph {
            name: "g".into(),
            source: "/x/g.json".into(),
            layout: Layout::Legacy,
            from_property_json: false,
            value: json!({"nodes": nodes, "connections": []}),
            auto_start: false,
            display_name: None,
            description: None,
            runtime: Runtime::default(),
        }
    }

    #[test]
    fn start_fields_only_when_present() {
        let g = legacy(json!([
            {"name": "agora_rtc", "addon": "a", "property": {"stream_id": 7}},
            {"name": "agora_rtm", "addon": "a"}
        ]));
        let spec = StartSpec {
            channel: "c".into(),
            graph: "g".into(),
            bot_uid: Some(9),
            ..Default::default()
        };
        let doc = build(&Catalog::default(), &g, &spec).unwrap();
        let nodes = &doc["_ten"]["predefined_graphs"][0]["nodes"];
        assert_eq!(doc["_ten"]["predefined_graphs"][0]["auto_start"], true);
        assert_eq!(
            nodes[0]["property"],
            json!({"stream_id": 9, "channel": "c"})
        );
        assert_eq!(
            nodes[1]["property"],
            json!({"channel": "c", "user_id": "9"})
        );

        let spec = StartSpec {
            channel: "c".into(),
            ..Default::default()
        };
        let doc = build(&Catalog::default(), &g, &spec).unwrap();
        let rtc = &doc["_ten"]["predefined_graphs"][0]["nodes"][0]["property"];
        assert_eq!(rtc["stream_id"], 7);
        assert!(rtc.get("remote_stream_id").is_none() && rtc.get("token").is_none());
    }

    #[test]
    fn merge_patch_per_node() {
        let g = legacy(
            json!([{"name": "n", "addon": "a", "property": {"a": {"b": 1, "c": 2}, "d": 3}}]),
        );
        let mut props = Map::new();
        props.insert("n".into(), json!({"a": {"b": null, "e": [1]}, "d": "x"}));
        let spec = StartSpec {
            channel: "c".into(),
            properties: Some(props),
            ..Default::default()
        };
        let doc = build(&Catalog::default(), &g, &spec).unwrap();
        assert_eq!(
            doc["_ten"]["predefined_graphs"][0]["nodes"][0]["property"],
            json!({"a": {"c": 2, "e": [1]}, "d": "x"})
        );
    }
}
