"""A trivial Flask app: the framework ceiling under idp's gunicorn settings."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/hello")
def hello() -> object:
    return jsonify(hello="world")
