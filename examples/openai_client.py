"""Talk to a running loraplane with the official `openai` client: models, a completion, a chat stream.

loraplane serve --enable-lora --lora-modules sql-lora=examples/adapters/sql-lora
python examples/openai_client.py [--base-url http://127.0.0.1:8000/v1] [--model sql-lora]
"""

from __future__ import annotations

import argparse

from openai import OpenAI

# The prompt format the demo adapter was trained on (scripts/train_demo_adapter.py, `make_prompt`).
SQL_PROMPT = (
    "[user] Write a SQL query to answer the question based on the table schema.\n\n"
    " context: {schema}\n\n question: {question} [/user] [assistant]"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="sql-lora", help="the base model's name or an adapter's")
    args = parser.parse_args()
    client = OpenAI(base_url=args.base_url, api_key="unused")
    for model in client.models.list().data:
        print(f"model {model.id:<32} parent={model.parent} root={model.root}")
    prompt = SQL_PROMPT.format(
        schema="CREATE TABLE users (name VARCHAR, city VARCHAR, age INTEGER)",
        question="What are the names of users who live in Paris?",
    )
    completion = client.completions.create(model=args.model, prompt=prompt, max_tokens=32, temperature=0)
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
