"""``assets/`` is generated from code and must match it; ``hftagg graph`` draws the pipeline."""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET

import pytest

from hftagg.cli import main
from hftagg.runtime.assemble import assemble
from hftagg.runtime.draw import Arrow, Box, Diagram, asset_texts, pipeline_diagram, render

from .conftest import ROOT

ASSETS = ROOT / "assets"
SVG = "{http://www.w3.org/2000/svg}"


def test_assets_match_the_code_that_generates_them():
    expected = asset_texts(ROOT)

    stale = [
        name
        for name, text in expected.items()
        if not (ASSETS / name).exists() or (ASSETS / name).read_text(encoding="utf-8") != text
    ]
    assert stale == [], f"stale: {stale}; regenerate with: .venv/bin/python assets/generate.py"


def test_assets_folder_holds_only_generated_files():
    present = {p.name for p in ASSETS.iterdir() if p.is_file()}

    assert present == set(asset_texts(ROOT)) | {"generate.py"}


def test_generation_is_deterministic():
    assert asset_texts(ROOT) == asset_texts(ROOT)


@pytest.fixture(scope="module")
def default_graph():
    return assemble(ROOT / "config.toml", environ={}).graph


def test_pipeline_diagram_has_every_stage_topic_and_edge(default_graph):
    diagram = pipeline_diagram(default_graph)

    ids = {b.id for b in diagram.boxes}
    assert {f"s_{n.id}" for n in default_graph.nodes} <= ids
    topics = {b.lines[0] for b in diagram.boxes if b.style == "topic"}
    assert topics == set(default_graph.topics)
    edges = {(a.src, a.dst) for a in diagram.arrows}
    assert ("s_sim", "t_sim_trades") in edges
    assert ("t_md_trades", "s_ema") in edges
    assert ("t_ind_ema", "s_delivery") in edges
    expected_edges = sum(len(n.inputs) + len(n.outputs) for n in default_graph.nodes)
    assert len(diagram.arrows) == expected_edges


def _rects(svg_text: str) -> dict[str, tuple[float, float, float, float]]:
    root = ET.fromstring(svg_text)
    out = {}
    for group in root.iter(f"{SVG}g"):
        rect = group.find(f"{SVG}rect")
        out[group.get("id")] = tuple(float(rect.get(k)) for k in ("x", "y", "width", "height"))
    return out


def test_svg_is_well_formed_with_one_box_per_node_and_none_overlapping(default_graph):
    diagram = pipeline_diagram(default_graph)

    rects = _rects(render(diagram, "svg"))

    assert set(rects) == {b.id for b in diagram.boxes}
    for (a, ra), (b, rb) in itertools.combinations(rects.items(), 2):
        apart = (
            ra[0] + ra[2] <= rb[0]
            or rb[0] + rb[2] <= ra[0]
            or ra[1] + ra[3] <= rb[1]
            or rb[1] + rb[3] <= ra[1]
        )
        assert apart, f"{a} overlaps {b}"


def test_svg_places_every_arrow_left_to_right(default_graph):
    diagram = pipeline_diagram(default_graph)
    rects = _rects(render(diagram, "svg"))

    for arrow in diagram.arrows:
        assert rects[arrow.src][0] + rects[arrow.src][2] < rects[arrow.dst][0], arrow


def test_text_formats_escape_what_they_must():
    diagram = Diagram(
        "odd", [Box("a", ('say "hi" <b>',)), Box("b", ("x\\y",), "sink")], [Arrow("a", "b", "l")]
    )

    mermaid = render(diagram, "mermaid")
    dot = render(diagram, "dot")
    svg = render(diagram, "svg")

    assert 'a["say #quot;hi#quot; #lt;b#gt;"]:::core' in mermaid
    assert 'a -->|"l"| b' in mermaid
    assert '"a" [label="say \\"hi\\" <b>"' in dot and '"b" [label="x\\\\y"' in dot
    assert '>say "hi" &lt;b&gt;</text>' in svg
    ET.fromstring(svg)  # well-formed


@pytest.mark.parametrize("fmt", ["mermaid", "dot", "svg"])
def test_graph_command_draws_the_configured_pipeline(capsys, tmp_path, monkeypatch, fmt):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.toml").write_text(
        '[data_sources.feed]\ntype = "simulator"\n\n'
        '[stages.avg]\ntype = "sma"\ntopics = { output = "ind.sma" }\n'
    )

    code = main(["graph", "--format", fmt])

    out = capsys.readouterr().out
    assert code == 0
    assert "feed" in out and "avg" in out and "ind.sma" in out
    if fmt == "mermaid":
        assert out.startswith("flowchart LR\n") and "t_md_trades --> s_avg" in out
    elif fmt == "dot":
        assert out.startswith('digraph "pipeline"') and '"t_md_trades" -> "s_avg";' in out
    else:
        assert {"s_feed", "s_avg", "t_ind_sma"} <= set(_rects(out))


def test_graph_output_file_format_follows_its_suffix(capsys, tmp_path):
    out = tmp_path / "p.svg"

    code = main(["graph", "-c", str(ROOT / "config.toml"), "-o", str(out)])

    assert code == 0
    assert "wrote" in capsys.readouterr().out
    assert re.match(r"<svg ", out.read_text())


def test_graph_of_an_invalid_config_prints_its_problems(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[processing]\nema_window = 0\n")

    code = main(["graph", "-c", str(bad)])

    captured = capsys.readouterr()
    assert code == 1
    assert "processing.ema_window = 0" in captured.err
    assert captured.out == ""
