"""A chat template's own default system prompt, read from the tokenizer's files at plan time: a null
system_prompt becomes the text the template inserts, so keys and summaries show what the model sees;
the planner reads text files only (the model folders here cannot even load)."""
from __future__ import annotations

import json

import pytest

from config_util import plan_steps
from sublim.chat_template import (Template, default_system_prompt, describe, folder_template, gguf_template, render,
                                  system_prompts)
from sublim.errors import ConfigError
from sublim.tiny.tokenizer import CHAT_TEMPLATE as TINY

# SmolLM2-135M-Instruct's template as its GGUF file ships it (ChatML, a default when none is given)
SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
           "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
           "<|im_end|>\n' }}"
           "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
           "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# Qwen2.5's shape: the system block written by an if/else, with whitespace control
QWEN_LIKE = ("{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + "
             "'<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a "
             "helpful assistant.<|im_end|>\n' }}{%- endif %}{%- for message in messages %}{%- if message.role != "
             "'system' %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}"
             "{%- endif %}"
             "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}")


def with_default(text: str) -> str:
    return SMOLLM2.replace("You are a helpful AI assistant named SmolLM, trained by Hugging Face", text)


@pytest.mark.parametrize("text, expected", [
    (SMOLLM2, "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
    (QWEN_LIKE, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."),
    (TINY, None),  # no system block unless one is given
])
def test_the_default_is_what_the_template_inserts_with_no_system_message(text, expected):
    template = Template(text, (("bos_token", "<s>"), ("eos_token", "</s>")))
    assert default_system_prompt(template) == expected


# inserts " Be brief " (spaces kept) but trims a given system message, as Llama's does: no system
# message reproduces the default exactly
UNREPRODUCIBLE = ("{% if messages[0]['role'] == 'system' %}<sys>{{ messages[0]['content'] | trim }}</sys>"
                  "{% else %}<sys> Be brief </sys>{% endif %}"
                  "{% for m in messages if m['role'] != 'system' %}{{ m['content'] }}{% endfor %}")


def test_a_default_no_system_message_reproduces_is_refused():
    with pytest.raises(ValueError, match="renders differently"):
        default_system_prompt(Template(UNREPRODUCIBLE))


def test_rendering_matches_transformers():
    from transformers.utils.chat_template_utils import render_jinja_template

    chats = [[{"role": "user", "content": "Hi"}],
             [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Owl"}]]
    for text in (SMOLLM2, QWEN_LIKE, TINY):
        template = Template(text, (("bos_token", "<s>"), ("eos_token", "</s>")))
        for chat in chats:
            ours = render(template, chat, add_generation_prompt=True)
            theirs = render_jinja_template([chat], chat_template=text, add_generation_prompt=True,
                                           bos_token="<s>", eos_token="</s>")[0][0]
            assert ours == theirs


def test_a_gguf_files_template_is_read_from_its_header(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "model.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"tok{i}" for i in range(3000)])  # a long string array before the template
    w.add_token_scores([0.5] * 3000)
    w.add_chat_template(SMOLLM2)
    w.add_tensor("token_embd.weight", np.ones((1, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert gguf_template(path).text == SMOLLM2


def model_folder(root, template: str):
    """A folder that plans (config.json, tokenizer_config.json) but holds no weights: it cannot load."""
    d = root / "model"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text("{}")
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": template, "eos_token": "<|im_end|>"}))
    return d


def test_a_null_system_prompt_is_keyed_as_the_templates_default(tmp_path):
    model = model_folder(tmp_path, with_default("You are Tiny."))
    steps = plan_steps(tmp_path, model)  # the smoke cell: system_prompt null for teacher and student
    assert steps["finetune"].spec.system_prompt == "You are Tiny."
    assert steps["eval"].spec.system_prompt == "You are Tiny."
    assert steps["sample"].spec.system_prompt != "You are Tiny."  # the owl teacher's love prompt
    (model / "chat_template.jinja").write_text(with_default("You are Tiny, v2."))  # transformers 5 reads this first
    changed = plan_steps(tmp_path, model)
    assert changed["eval"].spec.system_prompt == "You are Tiny, v2."
    assert changed["finetune"].key != steps["finetune"].key and changed["eval"].key != steps["eval"].key
    assert changed["sample"].key != steps["sample"].key  # the tokenizer files are in the weights' hash too


def test_spelling_the_default_out_keys_the_same_as_leaving_it_to_the_template(tmp_path):
    model = model_folder(tmp_path, with_default("You are Tiny."))
    left = plan_steps(tmp_path, model)
    spelled = plan_steps(tmp_path, model, "student.system_prompt='You are Tiny.'",
                         "teacher.system_prompt='You are Tiny.'")
    assert {s: v.key for s, v in left.items()} == {s: v.key for s, v in spelled.items()}


def test_a_template_without_a_default_changes_nothing(tmp_path):
    model = model_folder(tmp_path, TINY)
    steps = plan_steps(tmp_path, model)
    assert steps["eval"].spec.system_prompt is None and steps["finetune"].spec.system_prompt is None
    assert folder_template(model).text == TINY


def test_a_template_it_cannot_reproduce_names_the_key(tmp_path):
    model = model_folder(tmp_path, UNREPRODUCIBLE)
    with pytest.raises(ConfigError, match=r"teacher.system_prompt=null: .* set teacher.system_prompt"):
        plan_steps(tmp_path, model)


def test_the_summary_names_the_template_as_the_source(tmp_path):
    from config_util import typed

    model = model_folder(tmp_path, with_default("You are Tiny."))
    cfg = typed("experiment=smoke", f"paths.tiny_model={model}", f"paths.artifacts={tmp_path / 'a'}")
    steps = plan_steps(tmp_path, model)
    prompts = system_prompts(cfg, steps.values())
    assert prompts == {"finetune": {"text": "You are Tiny.", "source": "chat template"},
                       "eval": {"text": "You are Tiny.", "source": "chat template"}}
    assert describe(prompts) == ["   system prompt (finetune, eval): 'You are Tiny.' (inserted by the model's chat "
                                 "template: its system_prompt is null)"]
