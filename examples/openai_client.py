"""Talk to a running loraplane with the official `openai` client: models, a completion, a chat stream.

loraplane serve --enable-lora --lora-modules sql-lora=examples/adapters/sql-lora
python examples/openai_client.py [--base-url http://127.0.0.1:8000/v1] [--model sql-lora]
"""

from __future__ import annotations

import argparse

from openai import OpenAI


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="sql-lora", help="the base model's name or an adapter's")
    args = parser.parse_args()
    client = OpenAI(base_url=args.base_url, api_key="unused")
    for model in client.models.list().data:
        print(f"model {model.id:<32} parent={model.parent} root={model.root}")
    completion = client.completions.create(
        model=args.model, prompt="SELECT name FROM users WHERE", max_tokens=24, temperature=0
    )
    print("completion:", completion.choices[0].text)
    stream = client.chat.completions.create(
        model=args.model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=24, stream=True
    )
    print("chat:", end=" ", flush=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()


if __name__ == "__main__":
    main()
