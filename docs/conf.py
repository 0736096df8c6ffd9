"""Sphinx configuration of the netperturb documentation (``make docs``).

The build is offline: no intersphinx inventories are fetched, notebooks are executed locally
with the project's own kernel, and every warning is an error (``-W --keep-going``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(REPO / "src"))

import netperturb  # noqa: E402

# sphinx-autodoc-typehints 3.6 calls an API that Sphinx 10 removes: a Python warning per
# docstring, not a Sphinx warning; silenced so that the build log shows what matters.
warnings.filterwarnings("ignore", message=r".*_RstSnippetParser\.set_application.*")

project = "netperturb"
author = "netperturb developers"
copyright = "netperturb developers"  # noqa: A001
release = netperturb.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx_autodoc_typehints",
    "sphinx_copybutton",
    "config_reference",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
# reference/_generated/: written at build time (config_reference), included by reference/configuration.md
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "jupyter_execute", "reference/_generated"]
root_doc = "index"
# commands and options stay as typed: no "--" -> en dash, no curly quotes
smartquotes = False

# MyST: fenced directives, $math$, definition lists, heading anchors for [text](page.md#anchor)
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath", "attrs_inline"]
myst_heading_anchors = 3

# Notebooks (tutorials/*.md are MyST notebooks): executed at build time on the CPU, offline,
# a few seconds each; a cell that raises fails the build.
nb_execution_mode = "force"
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# API reference from the docstrings (Google style, napoleon), type hints from the signatures.
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_use_ivar = False
autodoc_typehints = "description"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
typehints_fully_qualified = False
always_document_param_types = False

# Every cross-reference must resolve (nitpicky), except names of the libraries netperturb
# builds on: without network access there are no intersphinx inventories to resolve them.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|torchvision|numpy|np|pandas|pd|scipy|matplotlib|PIL|jsonschema|yaml|tqdm|nbformat"
               r"|papermill|snakemake|sklearn|timm|safetensors)(\..*)?"),
    (r"py:.*", r"(Tensor|Module|nn\.Module|DataFrame|Series|Generator|ndarray|Path|PathLike|Figure|Axes)"),
    (r"py:.*", r"(collections|typing|pathlib|os|enum|dataclasses|concurrent|contextlib|fractions|abc|io|re|json"
               r"|hashlib|logging|argparse|tarfile|threading|queue|functools|itertools|math|numbers|types)\..*"),
    (r"py:.*", r"(Any|Callable|Iterable|Iterator|Mapping|MutableMapping|Sequence|Literal|Optional|Union|Self"
               r"|Fraction|Ellipsis|ABC)"),
    (r"py:class", r"(builtins\.)?(int|float|str|bool|bytes|dict|list|tuple|set|frozenset|object|type|None|NoneType)"),
    (r"py:exc", r"(builtins\.)?\w+(Error|Exception|Interrupt|Exit)"),
    # private names (a leading underscore stays inside its module): base classes shown by
    # :show-inheritance: and helpers a docstring mentions
    (r"py:.*", r"(.*\.)?_\w+"),
]
# Names the docstrings mention that are not on the API pages (constants without a ``#:``
# comment, which autodoc leaves out, and internal attributes),
# and one "Raises:" line that names three exceptions at once.
nitpick_ignore = [
    ("py:data", "FORMATS"),
    ("py:data", "TRAIN_KEYS"),
    ("py:data", "SWEEP_COLUMNS"),
    ("py:func", "merge_grid"),
    ("py:attr", "k"),
    ("py:exc", "OSError / PIL.UnidentifiedImageError / ValueError"),
]

# HTML: the PyData theme (pandas', NumPy's), no external assets fetched at build time.
html_theme = "pydata_sphinx_theme"
html_title = f"netperturb {release}"
html_static_path = ["_static"]
html_css_files = ["netperturb.css"]
html_show_sourcelink = False
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "header_links_before_dropdown": 6,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"index": []}
html_context = {"default_mode": "light"}

# sphinx-copybutton: copy commands without their prompts
copybutton_prompt_text = r"\$ "
copybutton_prompt_is_regexp = True


# --------------------------------------------------------------------------------------------
# Docstrings name objects of their own package by short name (``Preprocess``, ``to_format``,
# ``:mod:`.shards```). Sphinx resolves a short name only inside the current module; this
# resolves it to the one documented object whose full name ends with it (the one nearest to the
# referring module when several do). Ambiguous or unknown names stay unresolved (and fail the
# build under nitpicky).


def _nearest(candidates: list[str], module: str | None) -> str | None:
    if len(candidates) == 1:
        return candidates[0]
    if not module or not candidates:
        return None

    def shared(name: str) -> int:
        a, b = name.split("."), module.split(".")
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    ranked = sorted(candidates, key=shared, reverse=True)
    return ranked[0] if shared(ranked[0]) > shared(ranked[1]) else None


def _resolve_short_name(app, env, node, contnode):
    from sphinx.util.nodes import make_refnode

    if node.get("refdomain") != "py":
        return None
    raw = node["reftarget"].lstrip("~")
    target = raw.lstrip(".")
    if not target:
        return None
    py = env.get_domain("py")
    module = node.get("py:module") or ""
    table = py.modules if node.get("reftype") == "mod" else py.objects
    if target.startswith("netperturb."):
        # a name re-exported by a package (netperturb.perturb.engine.split_at_layer): the object
        # of that name in one of the package's modules
        package, _, last = target.rpartition(".")
        names = [o for o in table if o.startswith(package + ".") and o.endswith("." + last)]
    elif raw.startswith("."):
        # relative to the referring module's package only
        package = module.rpartition(".")[0] if module.count(".") > 1 else module
        names = [o for o in table if o.startswith(package + ".") and o.endswith("." + target)]
    else:
        names = [o for o in table if o.endswith("." + target)]
    if table is py.objects:
        names = [o for o in names if not py.objects[o].aliased]
    name = _nearest(names, module)
    if name is None:
        return None
    entry = table[name]
    return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, name)


def _prose_attribute(self):
    """napoleon reads the first line of a data / attribute docstring as "type: description"
    when it has a colon ("The filters by short name (as in the config: ...)" would become a
    type). netperturb's types come from the annotations, so the whole docstring stays prose."""
    first = self._lines.next()
    rest = self._dedent(self._consume_to_end())
    return "", self.__class__([first, *rest], self._config).lines()


def _hide_values() -> None:
    """Module constants are described by their ``#:`` comments; their values (dicts of classes,
    long lists) would bury the API pages. Sphinx 9 takes ``no-value`` for a lone ``autodata``
    only, not for the members of an ``automodule``: set it on every documenter's options.
    If autodoc's internals change, the values are shown again (nothing breaks)."""
    try:
        from sphinx.ext.autodoc import _directive, _directive_options
    except ImportError:
        return
    original = _directive_options._process_documenter_options

    def process(*, obj_type, default_options, options):
        result = original(obj_type=obj_type, default_options=default_options, options=options)
        if hasattr(result, "no_value"):
            result.no_value = True
        return result

    _directive._process_documenter_options = process


def setup(app):
    from sphinx.ext.napoleon.docstring import GoogleDocstring

    GoogleDocstring._consume_inline_attribute = _prose_attribute
    _hide_values()
    app.connect("missing-reference", _resolve_short_name)
