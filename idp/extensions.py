"""Flask extensions, created once and bound in ``create_app``."""

from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect

from idp.models.base import Base

db = SQLAlchemy(model_class=Base)
csrf = CSRFProtect()
