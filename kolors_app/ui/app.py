"""Compose the tabs into one Blocks app and wire what crosses tabs (restore, send-to, history, saved settings)."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from kolors_app.media.images import resolve_allowed_path, size_for
from kolors_app.patches import startup as library_patches
from kolors_app.core.schema import clean_parameters, images_needed
from kolors_app.core.errors import ValidationError
from kolors_app.core.schedulers import SCHEDULER_NAMES
from kolors_app.ui.creative import creative_tab
from kolors_app.ui.creative_accordion import restore_part
from kolors_app.ui.controls import REQUEST_FIELDS, aspect_for, control_updates, image_at, selected_image
from kolors_app.ui.generate_tabs import (GenerationTab, image_to_image_tab, ip_adapter_tab, localized_examples,
                                        text_to_image_tab)
from kolors_app.ui.history_tab import history_tab
from kolors_app.ui.inpaint_tab import inpaint_tab
from kolors_app.ui.i18n import i18n, language, name_of, status_text, tr
from kolors_app.ui.png_info_tab import png_info_tab
from kolors_app.ui.runner import AppContext, as_text

# Gradio's temporary files (uploads, gallery PNGs) are deleted once an hour when older than a day.
CACHE_CLEANUP = (3600, 86400)
STATIC = Path(__file__).resolve().parent / "static"
CSS = (STATIC / "studio.css").read_text(encoding="utf-8")
# The page's own script: the history (IndexedDB), saved settings, Ctrl+Enter. Passed to launch(head=...).
HEAD = "<script>\n" + (STATIC / "studio.js").read_text(encoding="utf-8") + "\n</script>"
# Saved settings and restore payloads are small; anything longer is not ours and is ignored or refused.
MAX_SETTINGS_CHARS = 64_000
MAX_PAYLOAD_CHARS = 64_000
IMAGE_NAMES = ("image", "ip_adapter_image")


def clamped(component, value):
    """A restored value the control can hold: numbers inside the slider's range, known samplers only."""
    if isinstance(component, gr.Slider) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return min(max(value, component.minimum), component.maximum)
    if isinstance(component, gr.Number) and isinstance(value, (int, float)) and not isinstance(value, bool):
        low = component.minimum if component.minimum is not None else value
        high = component.maximum if component.maximum is not None else value
        return min(max(value, low), high)
    offered = [choice for _, choice in getattr(component, "choices", [])]
    if isinstance(component, gr.Dropdown) and component.multiselect and isinstance(value, list):
        return [item for item in value if item in offered]  # the styles this server has
    if isinstance(component, (gr.Radio, gr.Dropdown)) and value not in offered:
        return SKIP  # a value from a file that the control does not offer
    return value


SKIP = gr.skip()


def unchanged(tabs_box: gr.Tabs) -> dict:
    """An answer that leaves every control as it was (an empty dict is not one for gradio)."""
    return {tabs_box: SKIP}


def restore_updates(tabs: dict[str, GenerationTab], tabs_box: gr.Tabs, parameters, keep: tuple = (),
                    lang: str | None = "en") -> dict:
    """Updates that put saved parameters into the tab of their mode and show that tab.

    Raises ValidationError for parameters that are not ours; `keep` names fields left as they are.
    """
    parameters = clean_parameters(parameters)
    if parameters.get("scheduler") not in (None, *SCHEDULER_NAMES):
        parameters.pop("scheduler")
    parameters = {name: value for name, value in parameters.items() if name not in keep}
    mode = parameters.get("mode", "text_to_image")
    if mode not in tabs:
        raise ValidationError("mode", f"{mode} has no tab on this page")
    tab = tabs[mode]
    updates = control_updates(tab.controls, parameters)
    for name, component in {**tab.sliders, **tab.restored}.items():
        if parameters.get(name) is not None:
            updates[component] = parameters[name]
        elif name in tab.restored and name not in keep:
            updates[component] = component.value  # a unit or side the saved run did not use goes back to off
    creative_updates, lora_notes = restore_part(tab.creative, tab.controls.prompt, parameters)
    updates.update(creative_updates)
    if lora_notes:
        gr.Warning(as_text("; ".join(lora_notes)), title="LoRA")
    updates = {component: clamped(component, value) for component, value in updates.items()}
    updates[tabs_box] = gr.Tabs(selected=tab.mode)
    needed = [name for name in images_needed(parameters) if name in tab.images]
    if needed and lang is not None:
        # Images are never stored in the parameters: say which ones the restored settings still need.
        names = ", ".join(name_of(lang, name) for name in needed)
        gr.Info(as_text(tr(lang, "give_again", names=names)), title=tr(lang, "title_images"))
    return updates


def restore_outputs(tabs: dict[str, GenerationTab], tabs_box: gr.Tabs) -> list:
    """Every component restore_updates may touch."""
    outputs = [tabs_box]
    for tab in tabs.values():
        c = tab.controls
        outputs += (c.request_inputs() + [c.aspect, c.scheduler_state] + list(tab.sliders.values())
                    + list(tab.restored.values()))
        outputs += tab.creative.inputs if tab.creative is not None else []
    return outputs


def image_outputs(tabs: dict[str, GenerationTab]) -> list:
    return [image for tab in tabs.values() for image in tab.images.values()]


def status_line(ctx: AppContext, request: gr.Request | None = None) -> str:
    """The status bar: model, device, dtype, offload and loading state."""
    lang = language(request)
    return f"{tr(lang, 'status_model')}: **{ctx.settings.model}** · {status_text(lang, ctx.manager.status)}"


def restore_message(tabs, tabs_box, parameters, request, keep: tuple = ()) -> dict:
    """restore_updates with its toast; anything wrong is a warning that leaves every control as it was."""
    lang = language(request)
    if not parameters:
        gr.Warning(tr(lang, "nothing_to_restore"), title=tr(lang, "title_nothing_selected"))
        return unchanged(tabs_box)
    try:
        updates = restore_updates(tabs, tabs_box, parameters, keep, lang)
    except ValidationError as error:
        gr.Warning(as_text(str(error)), title=tr(lang, "title_invalid_parameters"))
        return unchanged(tabs_box)
    mode = clean_parameters(parameters).get("mode", "text_to_image")
    gr.Info(tr(lang, "restored", tab=name_of(lang, mode)), title=tr(lang, "title_info"))
    return updates


def history_payload(text: str | None, tabs: dict[str, GenerationTab]) -> tuple[dict | None, dict]:
    """(parameters, {image component: uploaded file}) of a history entry the page sends back to restore."""
    if not text:
        return None, {}
    if not isinstance(text, str) or len(text) > MAX_PAYLOAD_CHARS:
        raise ValidationError("history entry", f"must be at most {MAX_PAYLOAD_CHARS:,} characters of JSON")
    try:
        payload = json.loads(text)
    except ValueError:
        raise ValidationError("history entry", "is not valid JSON") from None
    if not isinstance(payload, dict):
        raise ValidationError("history entry", "must be an object")
    parameters = clean_parameters(payload.get("parameters"), "history entry.parameters")
    tab = tabs[parameters.get("mode", "text_to_image")]
    images = {}
    for name, component in tab.images.items():
        path = payload.get(name)
        if path is None:
            images[component] = None
            continue
        if not isinstance(path, str) or len(path) > 4096:
            raise ValidationError(f"history entry.{name}", "must be the path of an uploaded file")
        # Only files the page uploaded to this server: never another server path.
        images[component] = str(resolve_allowed_path(path, [gr.utils.get_upload_folder()], f"history entry.{name}"))
    return parameters, images


def send_to(tabs: dict[str, GenerationTab], tabs_box: gr.Tabs, target: str, image_name: str, limits,
            gallery, result, index, request: gr.Request | None) -> dict:
    """The image on screen into another tab, with its prompt, negative prompt, seed and size."""
    lang = language(request)
    path = selected_image(gallery if isinstance(gallery, list) else None, index)
    parameters = image_at(result if isinstance(result, dict) else None, index)
    if not path or not isinstance(parameters, dict):
        gr.Warning(tr(lang, "no_image_yet"), title=tr(lang, "title_nothing_selected"))
        return unchanged(tabs_box)
    try:
        # The gallery arrives as sent (preprocess=False: gradio would check all of a crafted 3000-item list);
        # only the one file used is checked, and it must be one of this server's own files.
        path = str(resolve_allowed_path(path, [gr.utils.get_upload_folder()], "gallery"))
        parameters = clean_parameters(parameters, "gallery image")
    except ValidationError as error:
        gr.Warning(as_text(str(error)), title=tr(lang, "title_invalid_input"))
        return unchanged(tabs_box)
    tab = tabs[target]
    c = tab.controls
    width, height = parameters.get("width"), parameters.get("height")
    if not all(isinstance(v, int) and v % 8 == 0 and limits.min_size <= v <= limits.max_size for v in (width, height)):
        width, height = size_for((width or 1024, height or 1024))
    updates = {tab.images[image_name]: path, c.prompt: parameters.get("prompt", ""),
               c.negative_prompt: parameters.get("negative_prompt", ""), c.seed: parameters.get("seed", -1),
               c.width: width, c.height: height, c.aspect: aspect_for(width, height),
               tabs_box: gr.Tabs(selected=target)}
    gr.Info(tr(lang, "sent", tab=name_of(lang, target)), title=tr(lang, "title_info"))
    return updates


def saved_settings(tabs: dict[str, GenerationTab], text: str | None) -> dict:
    """Updates from the settings the page kept in this browser (one object per tab); bad ones are ignored."""
    if not text or not isinstance(text, str) or len(text) > MAX_SETTINGS_CHARS:
        return {}
    try:
        saved = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(saved, dict):
        return {}
    updates = {}
    for mode, tab in tabs.items():
        values = saved.get(mode)
        if not isinstance(values, dict):
            continue
        try:
            parameters = clean_parameters({**values, "mode": mode}, f"settings.{mode}")
        except ValidationError:
            continue
        if parameters.get("scheduler") not in (None, *SCHEDULER_NAMES):
            parameters.pop("scheduler")
        tab_updates = control_updates(tab.controls, parameters)
        for name, slider in tab.sliders.items():
            if parameters.get(name) is not None:
                tab_updates[slider] = parameters[name]
        for name, option in tab.options.items():
            if isinstance(values.get(name), str) and values[name] in [v for _, v in option.choices]:
                tab_updates[option] = values[name]
        updates.update({component: clamped(component, value) for component, value in tab_updates.items()})
    return updates


def settings_components(tab: GenerationTab) -> list:
    """What 'last settings' means for a tab: every request field plus its own sliders and options."""
    c = tab.controls
    return [*c.request_inputs(), c.aspect, c.scheduler_state, *tab.sliders.values(), *tab.options.values()]


def settings_names(tab: GenerationTab) -> list[str]:
    return [*REQUEST_FIELDS, "aspect", "scheduler_state", *tab.sliders, *tab.options]


def default_values(tab: GenerationTab) -> dict:
    """The tab's controls at their built values (what Reset brings back)."""
    return {component: component.value for component in settings_components(tab)}


def create_app(ctx: AppContext) -> gr.Blocks:
    """Build the whole UI around the given core objects; nothing is loaded or launched here."""
    # Idempotent; here so that an app built without launch() (tests, benches) behaves as the served one.
    library_patches.apply()
    with gr.Blocks(title="Kolors Studio", delete_cache=CACHE_CLEANUP) as app:
        gr.Markdown(f"## {i18n('title')}")
        status = gr.Markdown(status_line(ctx), elem_id="status-bar")
        with gr.Tabs() as tabs_box:
            with gr.Tab(i18n("text_to_image"), id="text_to_image"):
                t2i = text_to_image_tab(ctx)
            with gr.Tab(i18n("image_to_image"), id="image_to_image"):
                i2i = image_to_image_tab(ctx)
            with gr.Tab(i18n("ip_adapter"), id="ip_adapter"):
                ipa = ip_adapter_tab(ctx)
            with gr.Tab(i18n("inpaint"), id="inpaint"):
                inp = inpaint_tab(ctx)
            with gr.Tab(i18n("history"), id="history"):
                history = history_tab()
            with gr.Tab(i18n("png_info"), id="png_info"):
                png = png_info_tab()
            with gr.Tab(i18n("creative"), id="creative"):
                creative_tab(ctx)  # LoRAs, styles, hires fix, X/Y/Z plot, Upscale (kolors_app/ui/creative.py)
        settings_text = gr.Textbox(visible=False)
        tabs = {tab.mode: tab for tab in (t2i, i2i, ipa, inp)}
        outputs = restore_outputs(tabs, tabs_box)
        limits = ctx.settings.limits

        def status_now(request: gr.Request = None):
            return status_line(ctx, request)

        for tab in tabs.values():
            c = tab.controls

            def use_settings(result, index, request: gr.Request = None):
                # One image of a batch carries num_images=1; the batch size stays as it is.
                return restore_message(tabs, tabs_box, image_at(result, index), request, keep=("num_images",))

            c.use_settings.click(use_settings, [c.result, c.selected_index], outputs, queue=True,
                                 show_progress="hidden", api_visibility="private")
            for button, target, image_name in ((c.send_i2i, "image_to_image", "image"),
                                               (c.send_ip, "ip_adapter", "ip_adapter_image")):
                target_tab = tabs[target]
                tc = target_tab.controls

                def send(gallery, result, index, request: gr.Request = None, target=target, image_name=image_name):
                    return send_to(tabs, tabs_box, target, image_name, limits, gallery, result, index, request)

                button.click(send, [c.gallery, c.result, c.selected_index],
                             [target_tab.images[image_name], tc.prompt, tc.negative_prompt, tc.seed, tc.width,
                              tc.height, tc.aspect, tabs_box], queue=True, show_progress="hidden",
                             preprocess=False, api_visibility="private")
            # The browser keeps the run in its own history (IndexedDB): nothing goes back to the server.
            images = list(tab.images.values())
            tab.run_event.then(None, [c.result, c.gallery, *images], None, api_visibility="private",
                               js=f"(...values) => window.kolorsStudio && window.kolorsStudio.record('{tab.mode}', "
                                  f"{json.dumps(list(tab.images))}, ...values)")
            tab.run_event.then(status_now, None, status, queue=False, api_visibility="private")
            # Last settings of this tab, kept in this browser at every Generate.
            names = json.dumps(settings_names(tab))
            c.generate.click(None, settings_components(tab), None, api_visibility="private",
                             js=f"(...values) => {{ window.kolorsStudio && "
                                f"window.kolorsStudio.saveSettings('{tab.mode}', {names}, values); }}")

            def reset(request: gr.Request = None, tab=tab):
                gr.Info(tr(request, "settings_reset"), title=tr(request, "title_info"))
                return default_values(tab)

            c.reset.click(reset, None, settings_components(tab), queue=True, show_progress="hidden",
                          api_visibility="private",
                          js=f"() => {{ window.kolorsStudio && window.kolorsStudio.forgetSettings('{tab.mode}'); "
                             f"return []; }}")

        def restore_png(parameters, request: gr.Request = None):
            return restore_message(tabs, tabs_box, parameters, request)

        png.restore.click(restore_png, png.parameters, outputs, queue=True, show_progress="hidden",
                          api_visibility="private")

        def restore_entry(text, request: gr.Request = None):
            lang = language(request)
            try:
                parameters, images = history_payload(text, tabs)
            except ValidationError as error:
                gr.Warning(as_text(str(error)), title=tr(lang, "title_invalid_parameters"))
                return unchanged(tabs_box)
            updates = restore_message(tabs, tabs_box, parameters, request)
            return {**updates, **images} if updates.get(tabs_box) is not SKIP else updates

        history.restore.click(restore_entry, history.payload, outputs + image_outputs(tabs), queue=True,
                              show_progress="hidden", api_visibility="private",
                              js="() => window.kolorsStudio ? window.kolorsStudio.restorePayload() : ['']")

        # A new page: the status of now, the examples in the visitor's language, and their last settings.
        def on_load(text, request: gr.Request = None):
            lang = language(request)
            updates = saved_settings(tabs, text)
            updates[status] = status_line(ctx, request)
            for tab in tabs.values():
                if tab.examples is not None:
                    updates[tab.examples] = localized_examples(lang)
            return updates

        examples = [tab.examples for tab in tabs.values() if tab.examples is not None]
        load_outputs = [status, *examples, *[c for tab in tabs.values() for c in settings_components(tab)]]
        app.load(on_load, settings_text, load_outputs, queue=False, api_visibility="private",
                 js="() => [window.kolorsStudio ? window.kolorsStudio.loadSettings() : '']")
        gr.Timer(3.0).tick(status_now, None, status, queue=False, api_visibility="private")
    app.studio_tabs = tabs  # for tests: each tab's request handler
    return app
